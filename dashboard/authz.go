package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/slotscaler/slotscaler/pkg/slots"
	"github.com/slotscaler/slotscaler/web"
)

// verb is what a scope allows, in the pools it names.
type verb string

const (
	verbRead    verb = "read"    // pages, pool and task reads, events, history
	verbSubmit  verb = "submit"  // submit tasks
	verbApprove verb = "approve" // approve and reject a reserved task
	verbCancel  verb = "cancel"  // cancel a task
)

// verbs is every verb, in the order messages list them.
var verbs = []verb{verbRead, verbSubmit, verbApprove, verbCancel}

func parseVerb(s string) (verb, error) {
	v := verb(strings.TrimSpace(s))
	if !slices.Contains(verbs, v) {
		return "", fmt.Errorf("unknown verb %q (want one of read, submit, approve, cancel)", s)
	}
	return v, nil
}

// poolGlob names pools: "*" every pool, else "<namespace>/<name>" where
// each side is a path.Match pattern ("team-a/*", "*/terraform",
// "ci/tf-*"). Namespaces and pool names never hold "/", so "*" on one side
// never reaches into the other.
type poolGlob struct {
	text     string
	ns, name string
}

// errBadGlob is every malformed pool glob.
var errBadGlob = errors.New("bad pool glob")

const globHelp = "want <namespace>/<name> with * ? [..] wildcards (team-a/*, */terraform), or * for every pool"

func parsePoolGlob(s string) (poolGlob, error) {
	s = strings.TrimSpace(s)
	if s == "*" {
		return poolGlob{text: s, ns: "*", name: "*"}, nil
	}
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return poolGlob{}, fmt.Errorf("%w %q: %s", errBadGlob, s, globHelp)
	}
	for _, p := range []string{ns, name} {
		if _, err := path.Match(p, ""); err != nil {
			return poolGlob{}, fmt.Errorf("%w %q: %v; %s", errBadGlob, s, err, globHelp)
		}
	}
	return poolGlob{text: s, ns: ns, name: name}, nil
}

func (g poolGlob) String() string { return g.text }

func (g poolGlob) matches(p slots.PoolID) bool {
	// The patterns were checked when parsed: Match cannot fail here.
	nsOK, _ := path.Match(g.ns, p.Namespace)
	nameOK, _ := path.Match(g.name, p.Name)
	return nsOK && nameOK
}

// poolGlobs is a comma-separated list of pool globs (a flag).
type poolGlobs []poolGlob

func (gs poolGlobs) String() string {
	parts := make([]string, len(gs))
	for i, g := range gs {
		parts[i] = g.text
	}
	return strings.Join(parts, ",")
}

// Set parses "team-a/*,*/terraform".
func (gs *poolGlobs) Set(s string) error {
	var out poolGlobs
	for part := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		g, err := parsePoolGlob(part)
		if err != nil {
			return err
		}
		out = append(out, g)
	}
	*gs = out
	return nil
}

func (gs poolGlobs) matches(p slots.PoolID) bool {
	return slices.ContainsFunc(gs, func(g poolGlob) bool { return g.matches(p) })
}

// scope allows its verbs in the pools its globs name.
type scope struct {
	verbs []verb
	pools poolGlobs
}

// scopeEverything is the scope of a token given by --api-tokens.
var scopeEverything = scope{verbs: verbs, pools: poolGlobs{{text: "*", ns: "*", name: "*"}}}

// identity is who a request acts as: a token (a bearer header, or the
// page session opened with it), or a user signed in with OIDC, with the
// scopes its groups map to. What it may do lives here, not in the token.
type identity struct {
	Kind   string // "token" or "oidc"
	Name   string // the token's name; "oidc:<email or subject>"
	Email  string // "" for tokens
	scopes []scope
	// subject is an OIDC identity's subject at its provider, which never
	// changes (its email may): in every audit line.
	subject string
}

const identityToken = "token"

// can says whether the identity may use v in pool p.
func (id *identity) can(v verb, p slots.PoolID) bool {
	if id == nil {
		return false
	}
	for _, s := range id.scopes {
		if slices.Contains(s.verbs, v) && s.pools.matches(p) {
			return true
		}
	}
	return false
}

// actor is what the store records as who submitted or decided: the
// token's name, or "oidc:<email>" (else "oidc:<subject>").
func (id *identity) actor() string { return id.Name }

// describe names the identity in messages: `token "ci"`.
// An OIDC identity without scopes is told why: none of its groups is mapped.
func (id *identity) describe() string {
	if id.Kind == identityOIDC {
		if len(id.scopes) == 0 {
			return fmt.Sprintf("%s (signed in, but none of its groups is mapped to scopes in the tokens file)", strings.TrimPrefix(id.Name, "oidc:"))
		}
		return strings.TrimPrefix(id.Name, "oidc:")
	}
	return fmt.Sprintf("%s %q", id.Kind, id.Name)
}

type identityKey struct{}

func withIdentity(ctx context.Context, id *identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// identityOf is the request's authenticated identity, nil if none.
func identityOf(ctx context.Context) *identity {
	id, _ := ctx.Value(identityKey{}).(*identity)
	return id
}

// mayRead says whether the request may read pool p: anyone without read
// auth; with it, identities holding read there.
func (s *server) mayRead(r *http.Request, p slots.PoolID) bool {
	return !s.readAuth || identityOf(r.Context()).can(verbRead, p)
}

// allow refuses, with a 403 naming the verb and the pool, a request whose
// identity may not use v in the route's pool. Routes without a pool (the
// pool list, the overview, the approvals page) pass: their handlers show
// only the pools the identity may read. Reads pass without read auth.
func (s *server) allow(v verb, api bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if v == verbRead && !s.readAuth {
				next.ServeHTTP(w, r)
				return
			}
			id := identityOf(r.Context())
			if id == nil {
				// The routes put authentication first; this is a guard.
				if api {
					writeError(w, http.StatusUnauthorized, "unauthorized", "missing or invalid bearer token")
				} else {
					s.unauthorized(w, r, r.URL.RequestURI(), "")
				}
				return
			}
			if chi.URLParam(r, "ns") == "" {
				next.ServeHTTP(w, r)
				return
			}
			pool, err := poolOf(r)
			if err != nil {
				if api {
					s.storeError(w, r, err)
				} else {
					s.pageError(w, r, err)
				}
				return
			}
			if !id.can(v, pool) {
				s.forbidden(w, r, id, v, pool, api)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// forbidden answers a request refused for want of a scope and writes the
// audit line of the refusal.
func (s *server) forbidden(w http.ResponseWriter, r *http.Request, id *identity, v verb, pool slots.PoolID, api bool) {
	s.audit(r, id, string(v), v, pool, chi.URLParam(r, "id"), "forbidden")
	msg := fmt.Sprintf("%s has no %s scope on pool %s", id.describe(), v, pool)
	switch {
	case api:
		writeJSON(w, http.StatusForbidden, apiError{Error: msg, Code: "forbidden", Scope: string(v), Pool: pool.String()})
	case r.Header.Get("HX-Request") == "true":
		s.render(w, r, http.StatusForbidden, web.DecisionError(msg))
	default:
		s.render(w, r, http.StatusForbidden, web.ErrorPage(http.StatusForbidden, msg+"."))
	}
}

// audit writes the structured audit line of a decision (approve, reject,
// cancel) or of a refused request: who, what, where, and how it ended.
// Audit lines carry audit=true so a log pipeline can route them apart.
func (s *server) audit(r *http.Request, id *identity, action string, v verb, pool slots.PoolID, task, result string, extra ...slog.Attr) {
	attrs := []slog.Attr{
		slog.Bool("audit", true),
		slog.String("identity_kind", id.Kind), slog.String("identity", id.Name),
		slog.String("action", action), slog.String("verb", string(v)),
		slog.String("pool", pool.String()), slog.String("task", task), slog.String("result", result),
		slog.String("client", clientIP(r)), slog.String("request_id", middleware.GetReqID(r.Context())),
	}
	if id.subject != "" {
		attrs = append(attrs, slog.String("subject", id.subject))
	}
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "audit", append(attrs, extra...)...)
}
