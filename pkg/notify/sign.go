package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of every delivery.
const (
	// SignatureHeader: "t=<unix seconds>,v1=<hex HMAC-SHA256>" (Sign).
	SignatureHeader = "X-Slotscaler-Signature"
	// EventIDHeader is the event's stable id (Payload.ID): the same on
	// every attempt and every replica, for receivers to deduplicate.
	EventIDHeader = "X-Slotscaler-Event-Id"
	// EventHeader is the event kind (awaiting-approval, …).
	EventHeader = "X-Slotscaler-Event"
)

// Errors of Verify.
var (
	ErrNoSignature        = errors.New("no signature")
	ErrBadSignature       = errors.New("signature does not match")
	ErrSignatureTooOld    = errors.New("signature timestamp outside the tolerance")
	ErrMalformedSignature = errors.New("malformed signature header")
)

// Sign returns the signature header's value for a body sent at t.
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + mac(secret, ts, body)
}

func mac(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Verify checks a delivery's signature header against its raw body: the
// receiver's side of Sign. It accepts the header when one of its v1
// signatures is the HMAC of "<t>.<body>" with secret and t is within
// tolerance of now (0: any age; a receiver should set one, e.g. 5 minutes,
// so a captured request cannot be replayed later).
//
//	body, _ := io.ReadAll(r.Body)
//	if err := notify.Verify(secret, r.Header.Get(notify.SignatureHeader), body, 5*time.Minute); err != nil {
//		http.Error(w, "bad signature", http.StatusUnauthorized)
//		return
//	}
func Verify(secret []byte, header string, body []byte, tolerance time.Duration) error {
	return verifyAt(secret, header, body, tolerance, time.Now())
}

func verifyAt(secret []byte, header string, body []byte, tolerance time.Duration, now time.Time) error {
	if header == "" {
		return ErrNoSignature
	}
	var ts string
	var sigs []string
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrMalformedSignature
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrMalformedSignature
	}
	if tolerance > 0 {
		if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
			return fmt.Errorf("%w: signed at %v", ErrSignatureTooOld, time.Unix(sec, 0).UTC())
		}
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return ErrBadSignature
}
