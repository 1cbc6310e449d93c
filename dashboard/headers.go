package main

import "net/http"

// contentSecurityPolicy allows only this origin's own files: no inline
// script or style (htmx's indicator <style> is turned off by the
// htmx-config meta tag in the layout), no eval, no framing, no form posts
// or <base> elsewhere. The pages' JavaScript is htmx and its sse extension
// from /static; the live grid's EventSource and htmx's requests are
// same-origin, which default-src 'self' covers.
const contentSecurityPolicy = "default-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"

// securityHeaders sets the browser hardening headers on every response,
// pages, API, static files and errors alike.
func securityHeaders(next http.Handler) http.Handler {
	return securityHeadersWith(contentSecurityPolicy)(next)
}

// cspWithFormTarget is the policy letting forms also lead to origin: the
// sign-out form's answer redirects to the OpenID provider's logout, and
// browsers hold the redirects of a form's answer to form-action too.
func cspWithFormTarget(origin string) string {
	return contentSecurityPolicy + " " + origin
}

// securityHeadersWith is securityHeaders with the policy csp.
func securityHeadersWith(csp string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("Content-Security-Policy", csp)
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Referrer-Policy", "same-origin")
			h.Set("X-Frame-Options", "DENY")
			h.Set("Cross-Origin-Opener-Policy", "same-origin")
			next.ServeHTTP(w, r)
		})
	}
}
