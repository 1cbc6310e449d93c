package faultproxy

// The proxy needs two things from the wire: where one command ends (and its
// name and arguments), and where one reply ends (so it knows which command a
// reply answers). Both readers are written here on purpose. The maintained
// candidates did not fit: github.com/tidwall/redcon's Reader rewrites inline
// commands into RESP and refuses some inputs Redis accepts, its reply parser
// (ReadNextRESP) knows only the five RESP2 types, and it would bring its
// server's dependencies into the root module; go-redis's and rueidis's RESP3
// readers are internal packages. A reply reader over bufio that keeps the raw
// bytes is about a hundred lines.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// maxLen bounds declared lengths and counts, so garbage on the wire fails
// the connection instead of allocating without limit (Redis' own default
// proto-max-bulk-len is 512 MB).
const maxLen = 512 << 20

// command is one client command as read from the wire.
type command struct {
	raw    []byte   // exactly the bytes the client sent, forwarded as they are
	args   []string // args[0] is the command name as sent
	inline bool
}

func (c command) name() string {
	if len(c.args) == 0 {
		return ""
	}
	return strings.ToUpper(c.args[0])
}

// readCommand reads one command: a RESP array of bulk strings (what clients
// such as go-redis send), or an inline command (a line of words, as typed
// into telnet), which is passed through as it came; its args are the line's
// space-separated words (quoting is not interpreted).
func readCommand(r *bufio.Reader) (command, error) {
	b, err := r.Peek(1)
	if err != nil {
		return command{}, err
	}
	if b[0] != '*' {
		line, err := readLine(r, nil)
		if err != nil {
			return command{}, err
		}
		return command{raw: line, args: strings.Fields(string(line)), inline: true}, nil
	}
	raw, err := readLine(r, nil)
	if err != nil {
		return command{}, err
	}
	n, err := length(raw)
	if err != nil {
		return command{}, err
	}
	cmd := command{args: make([]string, 0, max(n, 0))}
	for range n {
		start := len(raw)
		if raw, err = readLine(r, raw); err != nil {
			return command{}, err
		}
		head := raw[start:]
		if head[0] != '$' {
			return command{}, fmt.Errorf("command element of type %q, want a bulk string", head[0])
		}
		size, err := length(head)
		if err != nil {
			return command{}, err
		}
		if size < 0 {
			return command{}, errors.New("null bulk string in a command")
		}
		start = len(raw)
		if raw, err = readN(r, raw, size+2); err != nil {
			return command{}, err
		}
		cmd.args = append(cmd.args, string(raw[start:start+size]))
	}
	cmd.raw = raw
	return cmd, nil
}

// readReply reads one complete RESP2 or RESP3 value, appending its raw bytes
// to buf. push reports an out-of-band RESP3 push ('>'), which answers no
// command. An attribute ('|') is read together with the value it describes.
func readReply(r *bufio.Reader, buf []byte) (raw []byte, push bool, err error) {
	b, err := r.Peek(1)
	if err != nil {
		return buf, false, err
	}
	if b[0] == '\n' {
		// A primary's keepalive to a replica waiting for its sync to
		// start: a bare newline that answers no command.
		c, _ := r.ReadByte()
		return append(buf, c), true, nil
	}
	push = b[0] == '>'
	raw, err = readValue(r, buf)
	return raw, push, err
}

func readValue(r *bufio.Reader, buf []byte) ([]byte, error) {
	start := len(buf)
	buf, err := readLine(r, buf)
	if err != nil {
		return buf, err
	}
	head := buf[start:]
	switch head[0] {
	case '+', '-', ':', '_', ',', '#', '(':
		return buf, nil // the line is the whole value
	case '$', '!', '=': // bulk string, bulk error, verbatim string
		n, err := length(head)
		if err != nil || n < 0 { // -1: RESP2 null bulk string
			return buf, err
		}
		return readN(r, buf, n+2)
	case '*', '~', '>', '%', '|': // array, set, push, map, attribute
		n, err := length(head)
		if err != nil || n < 0 { // -1: RESP2 null array
			return buf, err
		}
		if head[0] == '%' || head[0] == '|' {
			n *= 2
		}
		for range n {
			if buf, err = readValue(r, buf); err != nil {
				return buf, err
			}
		}
		if head[0] == '|' { // the attribute precedes the value it describes
			return readValue(r, buf)
		}
		return buf, nil
	default:
		return buf, fmt.Errorf("unknown RESP type %q", head[0])
	}
}

// readLine appends one line, CRLF included, to buf. Lines longer than the
// bufio buffer are read in pieces.
func readLine(r *bufio.Reader, buf []byte) ([]byte, error) {
	for {
		part, err := r.ReadSlice('\n')
		buf = append(buf, part...)
		if err == nil {
			return buf, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return buf, err
		}
		if len(buf) > maxLen {
			return buf, errors.New("RESP line too long")
		}
	}
}

func readN(r *bufio.Reader, buf []byte, n int) ([]byte, error) {
	start := len(buf)
	buf = append(buf, make([]byte, n)...)
	_, err := io.ReadFull(r, buf[start:])
	return buf, err
}

// length parses the number in a "$12\r\n"-style header line.
func length(line []byte) (int, error) {
	s := bytes.TrimRight(line[1:], "\r\n")
	if len(s) == 1 && s[0] == '?' {
		return 0, errors.New("streamed RESP3 values are not supported")
	}
	n, err := strconv.Atoi(string(s))
	if err != nil {
		return 0, fmt.Errorf("bad RESP length %q: %w", s, err)
	}
	if n > maxLen {
		return 0, fmt.Errorf("RESP length %d over %d", n, maxLen)
	}
	return n, nil
}
