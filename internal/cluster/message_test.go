package cluster

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)

func sample() Ban {
	return Ban{Op: OpBan, Prefix: netip.MustParsePrefix("203.0.113.7/32"), Jail: "asterisk", Reason: "5 failures",
		Kinds: map[string]int{"auth_failed": 5}, Origin: "pbx-1", At: t0, Until: t0.Add(time.Hour), BanCount: 2}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	b := sample()
	data, err := Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(Subject("pbx-1"), data, t0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Prefix != b.Prefix || got.Jail != b.Jail || got.Reason != b.Reason || got.Origin != b.Origin ||
		!got.At.Equal(b.At) || !got.Until.Equal(b.Until) || got.BanCount != 2 || got.Kinds["auth_failed"] != 5 || got.Op != OpBan {
		t.Fatalf("round trip: got %+v, want %+v", got, b)
	}
	u := b
	u.Op, u.Until = OpUnban, time.Time{}
	data, err = Encode(u)
	if err != nil {
		t.Fatal(err)
	}
	got, err = Decode(Subject("pbx-1"), data, t0)
	if err != nil || got.Op != OpUnban || !got.Until.IsZero() {
		t.Fatalf("unban: %+v %v", got, err)
	}
	if b.MsgID() == u.MsgID() {
		t.Fatalf("ban and unban share a message id %q", b.MsgID())
	}
}

func TestEncodeCleansReason(t *testing.T) {
	b := sample()
	b.Reason = "user \"x\"\n\x00evil" + strings.Repeat("é", 400)
	data, err := Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(Subject("pbx-1"), data, t0)
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(got.Reason, "\n\x00") || len(got.Reason) > MaxReason || !strings.HasPrefix(got.Reason, "user \"x\"??evil") {
		t.Fatalf("reason not cleaned: %q (%d bytes)", got.Reason, len(got.Reason))
	}
}

func TestDecodeRejects(t *testing.T) {
	good, err := Encode(sample())
	if err != nil {
		t.Fatal(err)
	}
	js := string(good)
	edit := func(old, new string) []byte {
		if !strings.Contains(js, old) {
			t.Fatalf("%q not in %s", old, js)
		}
		return []byte(strings.Replace(js, old, new, 1))
	}
	at := t0.UnixMicro()
	for _, tc := range []struct {
		name, subject string
		data          []byte
		reason        string
	}{
		{"other node's subject", Subject("pbx-2"), good, ReasonOrigin},
		{"not our subject", "pbxguard.other.pbx-1", good, ReasonSubject},
		{"wildcard subject", "pbxguard.bans.*", good, ReasonSubject},
		{"too big", Subject("pbx-1"), []byte(js + strings.Repeat(" ", MaxMessage)), ReasonSize},
		{"not json", Subject("pbx-1"), []byte("203.0.113.7"), ReasonSchema},
		{"unknown field", Subject("pbx-1"), edit(`"v":1,`, `"v":1,"x":1,`), ReasonSchema},
		{"trailing", Subject("pbx-1"), []byte(js + "{}"), ReasonSchema},
		{"version", Subject("pbx-1"), edit(`"v":1,`, `"v":2,`), ReasonVersion},
		{"op", Subject("pbx-1"), edit(`"op":"ban"`, `"op":"drop"`), ReasonSchema},
		{"everything", Subject("pbx-1"), edit("203.0.113.7/32", "0.0.0.0/0"), ReasonPrefix},
		{"wide", Subject("pbx-1"), edit("203.0.113.7/32", "203.0.0.0/16"), ReasonPrefix},
		{"host bits", Subject("pbx-1"), edit("203.0.113.7/32", "203.0.113.7/24"), ReasonPrefix},
		{"loopback", Subject("pbx-1"), edit("203.0.113.7/32", "127.0.0.1/32"), ReasonPrefix},
		{"mapped", Subject("pbx-1"), edit("203.0.113.7/32", "::ffff:203.0.113.7/128"), ReasonPrefix},
		{"v6 wide", Subject("pbx-1"), edit("203.0.113.7/32", "2001:db8::/32"), ReasonPrefix},
		{"not a prefix", Subject("pbx-1"), edit("203.0.113.7/32", "pbx.example"), ReasonPrefix},
		{"bad jail", Subject("pbx-1"), edit(`"jail":"asterisk"`, `"jail":"a b"`), ReasonField},
		{"control in reason", Subject("pbx-1"), edit(`"reason":"5 failures"`, `"reason":"a\nb"`), ReasonField},
		{"negative count", Subject("pbx-1"), edit(`"count":2`, `"count":-1`), ReasonField},
		{"ends before it starts", Subject("pbx-1"), edit(`"until":`, `"until":1`), ReasonDuration},
		{"two years", Subject("pbx-1"), edit(`"until":`, `"until":9`), ReasonDuration},
		{"future", Subject("pbx-1"), edit(`"at":`+itoa(at), `"at":`+itoa(at+int64(time.Hour/time.Microsecond))), ReasonTime},
		{"no time", Subject("pbx-1"), edit(`"at":`+itoa(at), `"at":0`), ReasonTime},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.subject, tc.data, t0)
			var r *Reject
			if !errors.As(err, &r) || r.Reason != tc.reason {
				t.Fatalf("Decode(%s) = %v, want a %q rejection", tc.data, err, tc.reason)
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestValidName(t *testing.T) {
	for s, want := range map[string]bool{"pbx-east-1": true, "a_b": true, "": false, "a.b": false, "a*": false, ">": false,
		strings.Repeat("a", 65): false, "pbx 1": false} {
		if got := ValidName(s); got != want {
			t.Errorf("ValidName(%q) = %v", s, got)
		}
	}
}
