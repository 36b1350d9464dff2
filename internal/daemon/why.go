package daemon

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/pbxguard/pbxguard/internal/store"
)

// Why is the answer to `pbxguard why ADDR`: the address's active ban (if
// any), the evidence of its bans (newest first) and its ban history.
type Why struct {
	Addr     netip.Addr           `json:"addr"`
	Active   *BanInfo             `json:"active,omitempty"`
	Evidence []store.Evidence     `json:"evidence"`
	History  []store.HistoryEntry `json:"history"`
}

// WriteWhy prints w for a person. Every attacker-reachable text in it was
// escaped when the evidence was kept (Escape); reasons and history are
// escaped here.
func WriteWhy(out io.Writer, w Why) {
	if w.Active != nil {
		b := w.Active
		fmt.Fprintf(out, "%s is banned: %s in jail %s since %s until %s (ban #%d)\n", w.Addr, b.Prefix, Escape([]byte(b.Jail)),
			b.Since.Format(time.RFC3339), b.Until.Format(time.RFC3339), b.Count)
	} else {
		fmt.Fprintf(out, "%s is not banned now\n", w.Addr)
	}
	if len(w.Evidence) == 0 {
		if len(w.History) == 0 {
			fmt.Fprintln(out, "no ban of it on record")
		} else {
			fmt.Fprintln(out, "no evidence kept (manual bans, and bans from before evidence was recorded, have none)")
		}
	}
	for i, e := range w.Evidence {
		d := e.Decision
		fmt.Fprintf(out, "\nban %d of %d: %s in jail %s at %s until %s\n", i+1, len(w.Evidence), e.Prefix, Escape([]byte(e.Jail)),
			e.At.UTC().Format(time.RFC3339), e.Until.UTC().Format(time.RFC3339))
		fmt.Fprintf(out, "  reason:    %s\n", Escape([]byte(e.Reason)))
		if d.MaxRetry > 0 {
			fmt.Fprintf(out, "  rule:      maxretry %d within findtime %s; bantime %s × increment %g per prior ban, at most %s\n",
				d.MaxRetry, d.FindTime, d.BanTime, d.Increment, d.MaxBanTime)
		}
		fmt.Fprintf(out, "  this ban:  #%d, for %s\n", d.Count, d.Duration)
		if !d.First.IsZero() {
			fmt.Fprintf(out, "  window:    %d counted events from %s to %s (%s)\n", d.Failures,
				d.First.UTC().Format(time.RFC3339), d.Last.UTC().Format(time.RFC3339), d.Last.Sub(d.First))
		}
		for _, a := range d.Allowlist {
			fmt.Fprintf(out, "  allowlist: passed: %s\n", a)
		}
		if d.Dropped > 0 {
			fmt.Fprintf(out, "  (%d older events not kept: the last %d are)\n", d.Dropped, store.MaxEvidenceEvents)
		}
		if d.Note != "" {
			fmt.Fprintf(out, "  note:      %s\n", d.Note)
		}
		fmt.Fprintf(out, "  evidence (%d events, oldest first):\n", len(e.Events))
		for _, x := range e.Events {
			mark := "counted    "
			if !x.Counted {
				mark = "not counted"
			}
			form := "NOTICE"
			if x.Structured {
				form = "structured"
			}
			fmt.Fprintf(out, "    %s %s %-15s %-10s account=%q detector=%s  [%s]\n", x.Time.UTC().Format(time.RFC3339), mark, x.Kind, form,
				x.Account, x.Detector, FormatSource(x))
			if x.Note != "" {
				fmt.Fprintf(out, "        why: %s\n", x.Note)
			}
			cut := ""
			if x.Cut {
				cut = " …(cut)"
			}
			fmt.Fprintf(out, "        %s%s\n", x.Raw, cut)
		}
	}
	if len(w.History) > 0 {
		fmt.Fprintf(out, "\nban history (%d):\n", len(w.History))
		for _, h := range w.History {
			fmt.Fprintf(out, "  %s  %-20s %-10s until %s  %s\n", h.At.UTC().Format(time.RFC3339), h.Prefix, Escape([]byte(h.Jail)),
				h.Until.UTC().Format(time.RFC3339), Escape([]byte(h.Reason)))
		}
	}
}

// LookupWhy gathers Why for addr from the store (active bans at now).
func LookupWhy(ctx context.Context, st *store.Store, addr netip.Addr, now time.Time) (Why, error) {
	addr = addr.Unmap().WithZone("")
	w := Why{Addr: addr, Evidence: []store.Evidence{}, History: []store.HistoryEntry{}}
	active, err := st.ActiveBans(ctx, now)
	if err != nil {
		return w, err
	}
	for _, b := range active {
		if b.Prefix.Contains(addr) {
			bi := banInfo(b, now)
			w.Active = &bi
			break
		}
	}
	if w.Evidence, err = st.EvidenceFor(ctx, addr, 0); err != nil {
		return w, err
	}
	if w.History, err = st.History(ctx, store.HistoryFilter{Addr: addr}); err != nil {
		return w, err
	}
	if w.Evidence == nil {
		w.Evidence = []store.Evidence{}
	}
	if w.History == nil {
		w.History = []store.HistoryEntry{}
	}
	return w, nil
}
