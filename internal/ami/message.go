// Package ami is pbxguard's own Asterisk Manager Interface client.
package ami

import "strings"

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
