package faultproxy

import (
	"bufio"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadReply(t *testing.T) {
	tests := []struct {
		name string
		wire string
		push bool
	}{
		{"simple string", "+OK\r\n", false},
		{"error", "-ERR wrong\r\n", false},
		{"integer", ":-42\r\n", false},
		{"bulk string", "$5\r\nhe\r\nl\r\n", false}, // CRLF inside a bulk string is data
		{"empty bulk string", "$0\r\n\r\n", false},
		{"RESP2 null bulk", "$-1\r\n", false},
		{"RESP2 null array", "*-1\r\n", false},
		{"array", "*3\r\n:1\r\n$1\r\na\r\n*1\r\n+x\r\n", false},
		{"empty array", "*0\r\n", false},
		{"null", "_\r\n", false},
		{"double", ",3.14\r\n", false},
		{"boolean", "#t\r\n", false},
		{"bulk error", "!10\r\nERR broken\r\n", false},
		{"verbatim string", "=7\r\ntxt:abc\r\n", false},
		{"big number", "(3492890328409238509324850943850943825024385\r\n", false},
		{"map", "%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n:2\r\n", false},
		{"set", "~2\r\n+a\r\n+b\r\n", false},
		{"push", ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n", true},
		{"attribute then its value", "|1\r\n+ttl\r\n:3600\r\n$3\r\nval\r\n", false},
		{"attribute inside an array", "*2\r\n|1\r\n+k\r\n+v\r\n:1\r\n:2\r\n", false},
		{"long line", "+" + strings.Repeat("x", 10000) + "\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Followed by another reply: the reader must stop exactly at
			// the end of the first.
			r := bufio.NewReaderSize(strings.NewReader(tt.wire+":7\r\n"), 16)
			raw, push, err := readReply(r, nil)
			require.NoError(t, err)
			assert.Equal(t, tt.wire, string(raw))
			assert.Equal(t, tt.push, push)
			raw, _, err = readReply(r, nil)
			require.NoError(t, err)
			assert.Equal(t, ":7\r\n", string(raw))
		})
	}
}

func TestReadReplyErrors(t *testing.T) {
	tests := []struct {
		name, wire string
	}{
		{"unknown type", "?x\r\n"},
		{"bad length", "$abc\r\n"},
		{"streamed string", "$?\r\n;4\r\nabcd\r\n;0\r\n"},
		{"truncated bulk", "$10\r\nabc"},
		{"truncated array", "*2\r\n:1\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := readReply(bufio.NewReader(strings.NewReader(tt.wire)), nil)
			require.Error(t, err)
		})
	}
}

func TestReadCommand(t *testing.T) {
	tests := []struct {
		name   string
		wire   string
		args   []string
		inline bool
	}{
		{"RESP", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\nv\r\nv\r\n", []string{"SET", "k", "v\r\nv"}, false},
		{"empty argument", "*2\r\n$4\r\necho\r\n$0\r\n\r\n", []string{"echo", ""}, false},
		{"inline", "set k  v\r\n", []string{"set", "k", "v"}, true},
		{"inline without CR", "PING\n", []string{"PING"}, true},
		{"empty inline", "\r\n", []string{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bufio.NewReaderSize(strings.NewReader(tt.wire+"*1\r\n$4\r\nPING\r\n"), 16)
			cmd, err := readCommand(r)
			require.NoError(t, err)
			assert.Equal(t, tt.wire, string(cmd.raw))
			assert.Equal(t, tt.args, cmd.args)
			assert.Equal(t, tt.inline, cmd.inline)
			cmd, err = readCommand(r)
			require.NoError(t, err)
			assert.Equal(t, []string{"PING"}, cmd.args)
			_, err = readCommand(r)
			assert.ErrorIs(t, err, io.EOF)
		})
	}
}

func TestReadCommandErrors(t *testing.T) {
	tests := []struct {
		name, wire string
	}{
		{"element not a bulk string", "*1\r\n:1\r\n"},
		{"null bulk", "*1\r\n$-1\r\n"},
		{"bad count", "*x\r\n"},
		{"truncated", "*2\r\n$3\r\nGET\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readCommand(bufio.NewReader(strings.NewReader(tt.wire)))
			require.Error(t, err)
		})
	}
}
