package notify

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestVerify(t *testing.T) {
	secret := []byte("s3cret")
	body := []byte(`{"id":"x"}`)
	now := time.Unix(1_800_000_000, 0)
	good := Sign(secret, body, now)
	tests := []struct {
		name   string
		secret []byte
		header string
		body   []byte
		at     time.Time
		want   error
	}{
		{"valid", secret, good, body, now, nil},
		{"within tolerance", secret, good, body, now.Add(4 * time.Minute), nil},
		{"wrong secret", []byte("other"), good, body, now, ErrBadSignature},
		{"body changed", secret, good, []byte(`{"id":"y"}`), now, ErrBadSignature},
		{"replayed later", secret, good, body, now.Add(6 * time.Minute), ErrSignatureTooOld},
		{"timestamp changed", secret, strings.Replace(good, "t=1800000000", "t=1800000001", 1), body, now, ErrBadSignature},
		{"no header", secret, "", body, now, ErrNoSignature},
		{"no v1", secret, "t=1800000000", body, now, ErrMalformedSignature},
		{"garbage", secret, "nonsense", body, now, ErrMalformedSignature},
		{"one of several v1 matches (secret rotation)", secret, good + ",v1=00", body, now, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verifyAt(tt.secret, tt.header, tt.body, 5*time.Minute, tt.at)
			if tt.want == nil {
				assert.NoError(t, err)
			} else {
				assert.True(t, errors.Is(err, tt.want), "got %v, want %v", err, tt.want)
			}
		})
	}
	assert.Regexp(t, `^t=1800000000,v1=[0-9a-f]{64}$`, good)
}
