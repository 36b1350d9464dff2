package ami

import (
	"fmt"
	"strings"
)

// Header is one "Key: Value" line of an AMI message, in wire order.
type Header struct {
	Key, Value string
}

// Message is one AMI packet: an event, a response or an action, as the
// ordered list of its headers (keys may repeat, e.g. ChanVariable).
type Message struct {
	Headers []Header
}

// Get returns the value of the first header named key (case-insensitive),
// or "" when there is none.
func (m *Message) Get(key string) string {
	for _, h := range m.Headers {
		if strings.EqualFold(h.Key, key) {
			return h.Value
		}
	}
	return ""
}

// Event is the value of the Event header ("" for responses).
func (m *Message) Event() string { return m.Get("Event") }

// NewAction returns an action message: "Action: name" followed by the
// key/value pairs given (an odd trailing key gets an empty value).
func NewAction(name string, kv ...string) *Message {
	m := &Message{Headers: make([]Header, 0, 1+(len(kv)+1)/2)}
	m.Headers = append(m.Headers, Header{"Action", name})
	for i := 0; i < len(kv); i += 2 {
		v := ""
		if i+1 < len(kv) {
			v = kv[i+1]
		}
		m.Headers = append(m.Headers, Header{kv[i], v})
	}
	return m
}

// Add appends a header (keys may repeat) and returns m for chaining.
func (m *Message) Add(key, value string) *Message {
	m.Headers = append(m.Headers, Header{key, value})
	return m
}

// Set replaces the value of the first header named key (case-insensitive)
// or appends the header when there is none.
func (m *Message) Set(key, value string) {
	for i := range m.Headers {
		if strings.EqualFold(m.Headers[i].Key, key) {
			m.Headers[i].Value = value
			return
		}
	}
	m.Headers = append(m.Headers, Header{key, value})
}

// Values returns the values of every header named key, in wire order
// (e.g. the "Output" lines of a command response).
func (m *Message) Values(key string) []string {
	var out []string
	for _, h := range m.Headers {
		if strings.EqualFold(h.Key, key) {
			out = append(out, h.Value)
		}
	}
	return out
}

// Response is the value of the Response header ("Success", "Error",
// "Follows", "Goodbye"; "" for events and actions). Note that some events
// carry a header named Response too (ChallengeResponseFailed): check
// Event() first to tell events from responses.
func (m *Message) Response() string { return m.Get("Response") }

// ActionID is the value of the ActionID header.
func (m *Message) ActionID() string { return m.Get("ActionID") }

// IsEvent reports whether m is an event (it has an Event header).
func (m *Message) IsEvent() bool { return m.Event() != "" }

// String renders m in wire form for logs and errors, with the values of
// Secret and Key (credentials) masked.
func (m *Message) String() string {
	var b strings.Builder
	for _, h := range m.Headers {
		v := h.Value
		if strings.EqualFold(h.Key, "Secret") || (strings.EqualFold(h.Key, "Key") && strings.EqualFold(m.Get("Action"), "Login")) {
			v = "********"
		}
		b.WriteString(h.Key)
		b.WriteString(": ")
		b.WriteString(v)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// validate refuses keys and values that would change the framing of the
// message on the wire: a line break in a value (say a channel name taken
// from an event) would otherwise inject headers or whole actions.
func (m *Message) validate() error {
	if len(m.Headers) == 0 {
		return fmt.Errorf("ami: empty message")
	}
	for _, h := range m.Headers {
		if h.Key == "" || strings.ContainsAny(h.Key, ":\r\n") || strings.TrimSpace(h.Key) != h.Key {
			return fmt.Errorf("ami: header key %q is not valid (no colon, space or line break allowed)", h.Key)
		}
		if strings.ContainsAny(h.Value, "\r\n") {
			return fmt.Errorf("ami: header %s: value %q contains a line break (refused: it would inject headers into the action)", h.Key, h.Value)
		}
	}
	return nil
}

// appendWire appends m in wire form (CRLF line ends, blank line at the end).
func (m *Message) appendWire(b []byte) []byte {
	for _, h := range m.Headers {
		b = append(b, h.Key...)
		b = append(b, ": "...)
		b = append(b, h.Value...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}
