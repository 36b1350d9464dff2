package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pbxguard/pbxguard/internal/calls"
	"github.com/pbxguard/pbxguard/internal/fraud"
	"github.com/pbxguard/pbxguard/internal/numbers"
)

// incidentCommands returns the toll-fraud incident commands.
func incidentCommands() []*cobra.Command {
	return []*cobra.Command{newIncidentCmd()}
}

// numberFlags are the dial-plan facts every incident command needs.
type numberFlags struct {
	country    string
	accessCode string
	trunks     []string
}

func (nf *numberFlags) add(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&nf.country, "country", "US", "the PBX's home country (ISO 3166 alpha-2: US, GB, AU, DE, …)")
	cmd.PersistentFlags().StringVar(&nf.accessCode, "access-code", "", "outbound access code users dial first (e.g. 9)")
	cmd.PersistentFlags().StringSliceVar(&nf.trunks, "trunk", []string{"carrier"}, "endpoints that are trunks, not extensions (never judged)")
}

func (nf *numberFlags) normalizer() (*numbers.Normalizer, error) {
	n, err := numbers.New(numbers.Config{HomeRegion: nf.country, AccessCode: nf.accessCode})
	if err != nil {
		return nil, usageErr("--country/--access-code: %v", err)
	}
	return n, nil
}

func newIncidentCmd() *cobra.Command {
	nf := &numberFlags{}
	cmd := &cobra.Command{
		Use:   "incident",
		Short: "Toll fraud: live view of calls per extension, contain an extension, after-the-fact report",
		Long: `incident shows the PBX's live calls grouped by extension (destinations, countries,
call counts, source addresses, risk score) over AMI; --contain EXT hangs up the
extension's calls, locks it and bans its addresses.

  pbxguard incident report --cdr /var/log/asterisk/cdr-csv/Master.csv --log /var/log/asterisk/security
  pbxguard incident unlock 1004`,
		Args: cobra.NoArgs,
	}
	nf.add(cmd)
	addLiveFlags(cmd, nf)
	cmd.AddCommand(newIncidentReportCmd(nf), newIncidentUnlockCmd(nf))
	return cmd
}

func newIncidentReportCmd(nf *numberFlags) *cobra.Command {
	var (
		cdrPath   string
		logs      []string
		since     string
		asJSON    bool
		ratesPath string
	)
	cmd := &cobra.Command{
		Use:   "report --cdr Master.csv [--log FILE...] [--since 2h] [--json] [--rates rates.csv]",
		Short: "Which extensions committed toll fraud, from where, to where, with what evidence and cost",
		Long: `report reads the CDR CSV (Master.csv) and runs the fraud rules over it.
CDRs carry no addresses: give the security log (or messages/syslog with security
events) with --log and the extension's addresses come from its SuccessfulAuth events.
--rates reads "country-or-+prefix,rate-per-minute" lines to estimate the cost.
Exit code 0: nothing suspicious; 1: suspicious extensions found; 2: bad input.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cdrPath == "" {
				return usageErr("incident report: --cdr is required (e.g. --cdr /var/log/asterisk/cdr-csv/Master.csv)")
			}
			nums, err := nf.normalizer()
			if err != nil {
				return err
			}
			in := fraud.ReportInput{}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return usageErr("--since %q: %v", since, err)
				}
				in.Since = t
			}
			f, err := os.Open(cdrPath)
			if err != nil {
				return usageErr("--cdr: %v", err)
			}
			defer f.Close()
			cr := calls.NewCDRReader(bufio.NewReader(f), time.Local)
			for {
				c, err := cr.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return usageErr("--cdr %s: %v", cdrPath, err)
				}
				in.Calls = append(in.Calls, c)
			}
			if len(in.Calls) == 0 && cr.Skipped > 0 {
				return usageErr("--cdr %s: no row is a CDR (%d malformed rows): is it cdr_csv's Master.csv?", cdrPath, cr.Skipped)
			}
			for _, p := range logs {
				auths, err := readAuths(p)
				if err != nil {
					return usageErr("--log: %v", err)
				}
				in.Auths = append(in.Auths, auths...)
			}
			if ratesPath != "" {
				rf, err := os.Open(ratesPath)
				if err != nil {
					return usageErr("--rates: %v", err)
				}
				in.Rates, err = fraud.ParseRates(rf)
				rf.Close()
				if err != nil {
					return usageErr("--rates %s: %v", ratesPath, err)
				}
			}
			rep, err := fraud.BuildReport(fraud.Config{IgnoreExtensions: nf.trunks}, nums, in)
			if err != nil {
				return usageErr("incident report: %v", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return failErr(err)
				}
			} else {
				printReport(out, rep, len(in.Auths) > 0)
			}
			if len(rep.Suspicious()) > 0 {
				return &exitError{code: exitFindings}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cdrPath, "cdr", "", "CDR CSV file (cdr_csv Master.csv)")
	cmd.Flags().StringSliceVar(&logs, "log", nil, "Asterisk security log (or messages/syslog with security events) for the extensions' addresses; repeatable")
	cmd.Flags().StringVar(&since, "since", "", "only calls since this long ago (2h, 30m) or since this time (RFC 3339)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	cmd.Flags().StringVar(&ratesPath, "rates", "", "per-country rate table, lines \"GB,0.02\" or \"+88213,4.50\" (per minute)")
	return cmd
}

func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("a negative duration looks back into the future (try 2h)")
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("neither a duration (2h, 30m) nor an RFC 3339 time (2026-11-25T04:00:00Z)")
}

func readAuths(path string) ([]calls.Auth, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []calls.Auth
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		if a, ok := calls.ParseSecurityLine(sc.Text()); ok && a.Service != "AMI" {
			out = append(out, a)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

func printReport(w io.Writer, rep *fraud.Report, haveLogs bool) {
	sus := rep.Suspicious()
	if len(sus) == 0 {
		fmt.Fprintf(w, "no suspicious extension (%d extensions with calls)\n", len(rep.Extensions))
		return
	}
	for _, e := range sus {
		fmt.Fprintf(w, "SUSPICIOUS extension %s: %d calls, %d international, first %s, last %s\n",
			e.Extension, e.Calls, e.InternationalCalls, e.FirstCall, e.LastCall)
		dest := strings.Join(e.Countries, ",")
		if len(e.NonGeographic) > 0 {
			dest = strings.TrimPrefix(dest+","+strings.Join(e.NonGeographic, ","), ",")
		}
		fmt.Fprintf(w, "  countries:   %s\n", dest)
		switch {
		case len(e.Addrs) > 0:
			fmt.Fprintf(w, "  addresses:   %s\n", strings.Join(e.Addrs, ", "))
		case !haveLogs:
			fmt.Fprintf(w, "  addresses:   unknown (CDRs carry none: add --log /var/log/asterisk/security)\n")
		default:
			fmt.Fprintf(w, "  addresses:   none found in the logs given\n")
		}
		if e.EstimatedCost != nil {
			fmt.Fprintf(w, "  est. cost:   %.2f (%d s billed", *e.EstimatedCost, e.Billsec)
			if e.UnpricedCalls > 0 {
				fmt.Fprintf(w, ", %d calls without a rate", e.UnpricedCalls)
			}
			fmt.Fprintln(w, ")")
		}
		for _, r := range e.Reasons {
			fmt.Fprintf(w, "  reason:      %s\n", r)
		}
		for _, p := range e.PrefixEvidence {
			fmt.Fprintf(w, "  prefix guess %s: %s\n", p.E164, strings.Join(p.Dialled, ", "))
		}
		tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  DIALLED\tE.164\tCOUNTRY\tTYPE\tCALLS\tBILLSEC")
		for _, d := range e.Destinations {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%d\n", d.Dialled, d.E164, d.Country, d.Type, d.Calls, d.Billsec)
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "%d suspicious of %d extensions with calls\n", len(sus), len(rep.Extensions))
}

// liveFlags are the AMI connection and view options of "incident".
type liveFlags struct {
	addr       string
	user       string
	secretFile string
	once       bool
	interval   time.Duration
	contain    string
	dryRun     bool
	banFor     time.Duration
	socket     string
	asJSON     bool
}

func addLiveFlags(cmd *cobra.Command, nf *numberFlags) {
	lf := &liveFlags{}
	pf := cmd.PersistentFlags()
	pf.StringVar(&lf.addr, "ami", "127.0.0.1:5038", "AMI address host:port")
	pf.StringVar(&lf.user, "ami-user", "pbxguard", "AMI user (manager.conf)")
	pf.StringVar(&lf.secretFile, "ami-secret-file", "/etc/pbxguard/ami.secret", "file holding the AMI secret")
	pf.BoolVar(&lf.dryRun, "dry-run", false, "print what would be done, do nothing")
	cmd.Flags().BoolVar(&lf.once, "once", false, "print the view once and exit")
	cmd.Flags().DurationVar(&lf.interval, "interval", 2*time.Second, "refresh interval of the live view")
	cmd.Flags().StringVar(&lf.contain, "contain", "", "contain extension EXT: hang up its calls, lock it, ban its addresses")
	cmd.Flags().DurationVar(&lf.banFor, "ban-for", 24*time.Hour, "ban duration for --contain")
	cmd.Flags().StringVar(&lf.socket, "socket", "/run/pbxguard/control.sock", "pbxguard daemon control socket (bans go through the daemon)")
	cmd.Flags().BoolVar(&lf.asJSON, "json", false, "JSON output")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return runLive(cmd, nf, lf) }
	liveFlagsFor[cmd] = lf
}

// liveFlagsFor lets "incident unlock" reuse the parent's AMI flags.
var liveFlagsFor = map[*cobra.Command]*liveFlags{}

func newIncidentUnlockCmd(nf *numberFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "unlock EXT",
		Short: "Unlock an extension pbxguard locked (AstDB pbxguard/locked/EXT)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runUnlock(cmd, nf, liveFlagsFor[cmd.Parent()], args[0])
		},
	}
}

func runLive(_ *cobra.Command, _ *numberFlags, _ *liveFlags) error {
	return failErr(errors.New("incident: the live view needs the AMI client, which this build does not have yet"))
}

func runUnlock(_ *cobra.Command, _ *numberFlags, _ *liveFlags, _ string) error {
	return failErr(errors.New("incident unlock: needs the AMI client, which this build does not have yet"))
}
