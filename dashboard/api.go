package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func poolOf(r *http.Request) (slots.PoolID, error) {
	p := slots.PoolID{Namespace: chi.URLParam(r, "ns"), Name: chi.URLParam(r, "name")}
	return p, p.Validate()
}

// decodeBody decodes a JSON body strictly: unknown fields, trailing data
// and bodies over limit are errors. An empty body is allowed when
// optional is true.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any, optional bool) (int, string, error) {
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF) && optional:
			return 0, "", nil
		case errors.Is(err, io.EOF):
			return http.StatusBadRequest, "bad_json", errors.New("request body is empty")
		case errors.As(err, &mbe):
			return http.StatusBadRequest, "body_too_large", fmt.Errorf("request body is larger than %d bytes", mbe.Limit)
		case errors.As(err, &se):
			return http.StatusBadRequest, "bad_json", fmt.Errorf("malformed JSON at byte %d", se.Offset)
		case errors.As(err, &te):
			return http.StatusBadRequest, "bad_json", fmt.Errorf("field %q must be %s", te.Field, te.Type)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return http.StatusBadRequest, "unknown_field", fmt.Errorf("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		default:
			return http.StatusBadRequest, "bad_json", fmt.Errorf("malformed JSON: %v", err)
		}
	}
	if dec.More() {
		return http.StatusBadRequest, "bad_json", errors.New("request body holds more than one JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return http.StatusBadRequest, "body_too_large", fmt.Errorf("request body is larger than %d bytes", mbe.Limit)
		}
	}
	return 0, "", nil
}
