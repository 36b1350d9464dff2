package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/daemon"
	"github.com/pbxguard/pbxguard/internal/store"
)

// evidenceCommands returns why, history and incidents: they read the
// store (state_dir) directly, so they answer with the daemon stopped too.
func evidenceCommands() []*cobra.Command {
	return []*cobra.Command{whyCmd(), historyCmd(), incidentsCmd()}
}

// stateFlags adds --state-dir and --config to a command that reads the store.
type stateFlags struct {
	dir    string
	config string
}

func (s *stateFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.dir, "state-dir", "", "state directory holding "+store.FileName+" (default: state_dir of the config, else "+config.DefaultStateDir+")")
	cmd.Flags().StringVarP(&s.config, "config", "c", "", "configuration file to read state_dir from (default "+defaultConfigPath+" if present)")
}

func (s *stateFlags) stateDir(cmd *cobra.Command) (string, error) {
	if s.dir != "" {
		return s.dir, nil
	}
	path, required := s.config, true
	if path == "" {
		path, required = defaultConfigPath, false
		if _, err := os.Stat(path); err != nil {
			return config.DefaultStateDir, nil
		}
	}
	cfg, err := loadConfig(cmd.ErrOrStderr(), path, required)
	if err != nil {
		return "", err
	}
	if cfg == nil {
		return config.DefaultStateDir, nil
	}
	return cfg.StateDir, nil
}

// open opens the existing store (never creates one: a wrong state_dir is
// an error that says so).
func (s *stateFlags) open(cmd *cobra.Command) (*store.Store, error) {
	dir, err := s.stateDir(cmd)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, store.FileName)); err != nil {
		return nil, failErr(fmt.Errorf("no pbxguard database in %s (%v): give --state-dir or --config, or start the daemon once", dir, err))
	}
	st, err := store.Open(dir)
	if err != nil {
		return nil, failErr(err)
	}
	return st, nil
}

// parseAge reads --since: a duration back from now (7d, 12h, 1w) or an
// RFC 3339 time.
func parseAge(flag, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := config.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, usageErr("%s %q: neither a duration (7d, 12h, 1w) nor an RFC 3339 time (2026-11-25T04:00:00Z)", flag, s)
}

func whyCmd() *cobra.Command {
	var sf stateFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "why ADDR",
		Short: "Why was an address banned: the jail's rule, the window, the allowlist checks and the log lines (file:line)",
		Long: `Show the bans of an address with the evidence kept for each: the jail and its
rule (maxretry within findtime, bantime and increments), the window of counted
events, the allowlist checks the ban passed, and the last 20 events with the
raw line, its file and line number (or "AMI event"). A free-text NOTICE that
Asterisk also reported as a structured SecurityEvent shows as "not counted"
beside the event that counted. Attacker text is escaped (control bytes as \xNN).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, err := netip.ParseAddr(args[0])
			if err != nil {
				return usageErr("%q is not an address (write 203.0.113.7 or 2001:db8::7)", args[0])
			}
			st, err := sf.open(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			w, err := daemon.LookupWhy(cmd.Context(), st, addr, time.Now())
			if err != nil {
				return failErr(err)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), w)
			}
			daemon.WriteWhy(cmd.OutOrStdout(), w)
			return nil
		},
	}
	sf.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func historyCmd() *cobra.Command {
	var sf stateFlags
	var asJSON bool
	var since, addrS, jailName string
	var limit int
	cmd := &cobra.Command{
		Use:   "history [--since 7d] [--addr A] [--jail J] [--json]",
		Short: "List past and present bans from the ban history, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := store.HistoryFilter{Jail: jailName, Limit: limit}
			var err error
			if f.Since, err = parseAge("--since", since, time.Now()); err != nil {
				return err
			}
			if addrS != "" {
				if f.Addr, err = netip.ParseAddr(addrS); err != nil {
					return usageErr("--addr %q is not an address (write 203.0.113.7 or 2001:db8::7)", addrS)
				}
			}
			st, err := sf.open(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			h, err := st.History(cmd.Context(), f)
			if err != nil {
				return failErr(err)
			}
			if h == nil {
				h = []store.HistoryEntry{}
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), h)
			}
			printHistory(cmd.OutOrStdout(), h)
			return nil
		},
	}
	sf.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&since, "since", "7d", "how far back (7d, 12h, or an RFC 3339 time; \"\" = all)")
	cmd.Flags().StringVar(&addrS, "addr", "", "only this address (or the IPv6 prefixes holding it)")
	cmd.Flags().StringVar(&jailName, "jail", "", "only this jail")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many (0 = all)")
	return cmd
}

func printHistory(w io.Writer, h []store.HistoryEntry) {
	if len(h) == 0 {
		fmt.Fprintln(w, "no bans in that period")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tADDR\tPREFIX\tJAIL\tUNTIL\tREASON")
	for _, e := range h {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.At.Local().Format("2006-01-02 15:04:05"), e.Addr, e.Prefix,
			daemon.Escape([]byte(e.Jail)), e.Until.Local().Format("2006-01-02 15:04:05"), daemon.Escape([]byte(e.Reason)))
	}
	tw.Flush()
}

// incidentJSON is an incident with its detail as JSON, not as a string.
type incidentJSON struct {
	ID      int64           `json:"id"`
	Time    time.Time       `json:"time"`
	Kind    string          `json:"kind"`
	Subject string          `json:"subject"`
	Detail  json.RawMessage `json:"detail"`
}

func toIncidentJSON(in store.Incident) incidentJSON {
	d := json.RawMessage(in.Detail)
	if !json.Valid(d) {
		b, _ := json.Marshal(in.Detail)
		d = b
	}
	return incidentJSON{ID: in.ID, Time: in.Time.UTC(), Kind: in.Kind, Subject: in.Subject, Detail: d}
}

func incidentsCmd() *cobra.Command {
	var sf stateFlags
	var asJSON bool
	var since string
	var limit int
	cmd := &cobra.Command{
		Use:   "incidents [--since 7d] [--json]",
		Short: "List recorded incidents (toll fraud findings and what was done), newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			from, err := parseAge("--since", since, time.Now())
			if err != nil {
				return err
			}
			st, err := sf.open(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			ins, err := st.Incidents(cmd.Context(), from, limit)
			if err != nil {
				return failErr(err)
			}
			out := make([]incidentJSON, len(ins))
			for i, in := range ins {
				out[i] = toIncidentJSON(in)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), out)
			}
			w := cmd.OutOrStdout()
			if len(out) == 0 {
				fmt.Fprintln(w, "no incidents in that period")
				return nil
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTIME\tKIND\tSUBJECT")
			for _, in := range out {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", in.ID, in.Time.Local().Format("2006-01-02 15:04:05"),
					daemon.Escape([]byte(in.Kind)), daemon.Escape([]byte(in.Subject)))
			}
			tw.Flush()
			fmt.Fprintln(w, "details: pbxguard incidents show ID")
			return nil
		},
	}
	sf.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&since, "since", "7d", "how far back (7d, 12h, or an RFC 3339 time; \"\" = all)")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many (0 = all)")
	cmd.AddCommand(incidentShowCmd())
	return cmd
}

func incidentShowCmd() *cobra.Command {
	var sf stateFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show one incident: calls, destinations, costs, actions taken and their results",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || id < 1 {
				return usageErr("%q is not an incident id (a number from pbxguard incidents)", args[0])
			}
			st, err := sf.open(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			in, ok, err := st.Incident(cmd.Context(), id)
			if err != nil {
				return failErr(err)
			}
			if !ok {
				return &exitError{code: exitFindings, err: fmt.Errorf("no incident %d (list them with pbxguard incidents --since 30d)", id)}
			}
			j := toIncidentJSON(in)
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), j)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "incident %d: %s\nsubject: %s\ntime:    %s\ndetail:\n", j.ID, daemon.Escape([]byte(j.Kind)),
				daemon.Escape([]byte(j.Subject)), j.Time.Local().Format(time.RFC3339))
			// Indented JSON: strings in it are JSON-escaped (no raw
			// control bytes or newlines reach the terminal).
			var v any
			if json.Unmarshal(j.Detail, &v) == nil {
				return writeJSON(w, v)
			}
			fmt.Fprintln(w, daemon.Escape(j.Detail))
			return nil
		},
	}
	sf.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printBansEvidence is `bans --evidence`: each active ban followed by the
// evidence of its latest decision.
func printBansEvidence(ctx context.Context, cmd *cobra.Command, sf *socketFlags, bans []daemon.BanInfo, asJSON bool) error {
	stf := stateFlags{config: sf.config}
	st, err := stf.open(cmd)
	if err != nil {
		return err
	}
	defer st.Close()
	type banEvidence struct {
		daemon.BanInfo
		Evidence *store.Evidence `json:"evidence"`
	}
	out := make([]banEvidence, len(bans))
	for i, b := range bans {
		out[i].BanInfo = b
		addr, err := netip.ParseAddr(b.Addr)
		if err != nil {
			continue
		}
		evs, err := st.EvidenceFor(ctx, addr, 1)
		if err != nil {
			return failErr(err)
		}
		if len(evs) > 0 && evs[0].Prefix.String() == b.Prefix {
			out[i].Evidence = &evs[0]
		}
	}
	if asJSON {
		return writeJSON(cmd.OutOrStdout(), out)
	}
	w := cmd.OutOrStdout()
	if len(out) == 0 {
		fmt.Fprintln(w, "no active bans")
	}
	for i, b := range out {
		if i > 0 {
			fmt.Fprintln(w)
		}
		why := daemon.Why{Addr: netip.MustParseAddr(b.Addr)}
		bi := b.BanInfo
		why.Active = &bi
		if b.Evidence != nil {
			why.Evidence = []store.Evidence{*b.Evidence}
		}
		daemon.WriteWhy(w, why)
	}
	return nil
}
