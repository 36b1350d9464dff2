package store

import (
	"context"
	"testing"
)

func TestOutboxSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	o, err := s.Outbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Replace(ctx, [][]byte{[]byte("a"), []byte("b"), []byte("c")}); err != nil {
		t.Fatal(err)
	}
	if err := o.Replace(ctx, [][]byte{[]byte("b"), []byte("c")}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	o, err = s.Outbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := o.Load(ctx)
	if err != nil || len(got) != 2 || string(got[0]) != "b" || string(got[1]) != "c" {
		t.Fatalf("Load = %q, %v; want [b c]", got, err)
	}
	if err := o.Replace(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := o.Load(ctx); len(got) != 0 {
		t.Fatalf("after clearing: %q", got)
	}
}
