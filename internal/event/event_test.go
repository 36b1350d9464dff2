package event

import "testing"

func TestKindNamesRoundTrip(t *testing.T) {
	for k := KindNone; k < numKinds; k++ {
		got, ok := ParseKind(k.String())
		if !ok || got != k {
			t.Fatalf("ParseKind(%q) = %v, %v; want %v", k.String(), got, ok, k)
		}
	}
	if _, ok := ParseKind("nope"); ok {
		t.Fatal("ParseKind accepted an unknown name")
	}
}

func TestServiceNamesRoundTrip(t *testing.T) {
	for s := ServiceUnknown; s < numServices; s++ {
		got, ok := ParseService(s.String())
		if !ok || got != s {
			t.Fatalf("ParseService(%q) = %v, %v; want %v", s.String(), got, ok, s)
		}
	}
}

func TestIsFailure(t *testing.T) {
	fail := map[Kind]bool{AuthFailure: true, UnknownAccount: true, ACLViolation: true, CallRejected: true, Scan: true, BadRequest: true}
	for k := KindNone; k < numKinds; k++ {
		if k.IsFailure() != fail[k] {
			t.Errorf("%v.IsFailure() = %v, want %v", k, k.IsFailure(), fail[k])
		}
	}
}
