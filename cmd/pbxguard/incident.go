package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/calls"
	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/daemon"
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
	config     string
	// settings is the configuration's fraud: section, nil without one.
	settings *fraud.Settings
}

func (nf *numberFlags) add(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVarP(&nf.config, "config", "c", "", "configuration file whose fraud: section gives the defaults of these flags (default "+defaultConfigPath+" if present)")
	cmd.PersistentFlags().StringVar(&nf.country, "country", "US", "the PBX's home country (ISO 3166 alpha-2: US, GB, AU, DE, …)")
	cmd.PersistentFlags().StringVar(&nf.accessCode, "access-code", "", "outbound access code users dial first (e.g. 9)")
	cmd.PersistentFlags().StringSliceVar(&nf.trunks, "trunk", []string{"carrier"}, "endpoints that are trunks, not extensions (never judged)")
}

// fromConfig fills the flags the user did not give from the configuration
// file's fraud: and control: sections (lf may be nil).
func (nf *numberFlags) fromConfig(cmd *cobra.Command, lf *liveFlags) error {
	path, required := nf.config, true
	if path == "" {
		path, required = defaultConfigPath, false
		if _, err := os.Stat(path); err != nil {
			return nil
		}
	}
	cfg, err := loadConfig(cmd.ErrOrStderr(), path, required)
	if err != nil || cfg == nil {
		return err
	}
	if lf != nil && lf.socket == "" {
		lf.socket = cfg.Control.Socket
	}
	if cfg.Fraud == nil {
		return nil
	}
	set, err := fraud.ParseSettings(cfg.Fraud)
	if err != nil {
		return usageErr("%s: %v", path, err)
	}
	nf.settings = set
	unset := func(name string) bool { f := cmd.Flag(name); return f != nil && !f.Changed }
	if unset("country") {
		nf.country = set.Country
	}
	if unset("access-code") {
		nf.accessCode = set.AccessCode
	}
	if unset("trunk") && set.Trunks != nil {
		nf.trunks = set.Trunks
	}
	if lf != nil {
		if unset("ami") {
			lf.addr = set.AMIAddr
		}
		if unset("ami-user") {
			lf.user = set.AMIUser
		}
		if unset("ami-secret-file") {
			lf.secretFile = set.AMISecretFile
		}
		if unset("ami-md5") {
			lf.md5 = set.AMIMD5
		}
	}
	return nil
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
	lf := addLiveFlags(cmd, nf)
	cmd.AddCommand(newIncidentReportCmd(nf), newIncidentUnlockCmd(nf, lf))
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
			if err := nf.fromConfig(cmd, nil); err != nil {
				return err
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
	if strings.HasPrefix(strings.TrimSpace(s), "-") {
		return time.Time{}, fmt.Errorf("a negative duration looks back into the future (try 2h)")
	}
	if d, err := config.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	} else if errors.Is(err, config.ErrDurationRange) {
		return time.Time{}, fmt.Errorf("%q is more than ten years (try 2h, 1d)", s)
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
	esc := func(s string) string { return fraud.Escape(s, 0) } // dialled numbers are callers' text
	for _, e := range sus {
		fmt.Fprintf(w, "SUSPICIOUS extension %s: %d calls, %d international, first %s, last %s\n",
			esc(e.Extension), e.Calls, e.InternationalCalls, e.FirstCall, e.LastCall)
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
			fmt.Fprintf(w, "  reason:      %s\n", esc(r))
		}
		for _, p := range e.PrefixEvidence {
			fmt.Fprintf(w, "  prefix guess %s: %s\n", p.E164, esc(strings.Join(p.Dialled, ", ")))
		}
		tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  DIALLED\tE.164\tCOUNTRY\tTYPE\tCALLS\tBILLSEC")
		for _, d := range e.Destinations {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%d\n", esc(d.Dialled), d.E164, d.Country, d.Type, d.Calls, d.Billsec)
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "%d suspicious of %d extensions with calls\n", len(sus), len(rep.Extensions))
}

// liveFlags are the AMI connection and view options of "incident".
type liveFlags struct {
	addr        string
	unlockJSON  bool // unlock --json
	user        string
	secretFile  string
	md5         bool
	once        bool
	interval    time.Duration
	contain     string
	dryRun      bool
	banFor      time.Duration
	socket      string
	asJSON      bool
	banContacts bool
}

func addLiveFlags(cmd *cobra.Command, nf *numberFlags) *liveFlags {
	lf := &liveFlags{}
	pf := cmd.PersistentFlags()
	pf.StringVar(&lf.addr, "ami", "127.0.0.1:5038", "AMI address host:port")
	pf.StringVar(&lf.user, "ami-user", "pbxguard", "AMI user (manager.conf)")
	pf.StringVar(&lf.secretFile, "ami-secret-file", "/etc/pbxguard/ami.secret", "file holding the AMI secret")
	pf.BoolVar(&lf.md5, "ami-md5", true, "log in with the MD5 challenge (the secret never crosses the wire)")
	pf.BoolVar(&lf.dryRun, "dry-run", false, "print what would be done, do nothing")
	cmd.Flags().BoolVar(&lf.once, "once", false, "print the view once and exit")
	durationFlag(cmd, &lf.interval, "interval", 2*time.Second, 100*time.Millisecond, "refresh interval of the live view")
	cmd.Flags().StringVar(&lf.contain, "contain", "", "contain extension EXT: hang up its calls, lock it, ban its addresses")
	durationFlag(cmd, &lf.banFor, "ban-for", 24*time.Hour, time.Second, "ban duration for --contain")
	cmd.Flags().StringVar(&lf.socket, "socket", "", "pbxguard daemon control socket; bans go through the daemon (default: control.socket of the config, else "+config.DefaultSocket+")")
	cmd.Flags().BoolVar(&lf.asJSON, "json", false, "JSON output")
	cmd.Flags().BoolVar(&lf.banContacts, "ban-contacts", false, "with --contain, also ban the addresses in its registered Contact headers (client-written: check them first)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return runLive(cmd, nf, lf) }
	return lf
}

func newIncidentUnlockCmd(nf *numberFlags, lf *liveFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "unlock EXT",
		Short: "Unlock an extension pbxguard locked (AstDB pbxguard/locked/EXT)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runUnlock(cmd, nf, lf, args[0])
		},
	}
	c.Flags().BoolVar(&lf.unlockJSON, "json", false, "print JSON")
	return c
}

// amiSession is what the live commands need from the AMI client.
type amiSession interface {
	fraud.AMIActions
	ActionList(ctx context.Context, action *ami.Message) (*ami.Message, []*ami.Message, error)
	Getvar(ctx context.Context, channel, variable string) (string, error)
	Close() error
}

// dialAMI connects with the flags' credentials.
func dialAMI(ctx context.Context, lf *liveFlags) (amiSession, error) {
	secret, err := os.ReadFile(lf.secretFile)
	if err != nil {
		return nil, usageErr("--ami-secret-file: %v (write the secret of the manager.conf user %q into it, mode 0600)", err, lf.user)
	}
	c, err := ami.Dial(ctx, ami.Config{
		Addr: lf.addr, Username: lf.user, Secret: strings.TrimSpace(string(secret)), UseMD5: lf.md5,
		Events: "off", PingInterval: -1, Timeout: 5 * time.Second,
	})
	if err != nil {
		return nil, failErr(fmt.Errorf("AMI %s: %w", lf.addr, err))
	}
	return c, nil
}

// liveCall is one originating channel from CoreShowChannels.
type liveCall struct {
	Channel  string     `json:"channel"`
	Dialled  string     `json:"dialled"`
	E164     string     `json:"e164,omitempty"`
	Country  string     `json:"country,omitempty"`
	Intl     bool       `json:"international"`
	State    string     `json:"state"`
	Duration string     `json:"duration"`
	Addr     netip.Addr `json:"addr,omitzero"`
	id       string
}

// extView is one extension in the live view.
type extView struct {
	Extension          string       `json:"extension"`
	Calls              int          `json:"calls"`
	InternationalCalls int          `json:"international_calls"`
	Destinations       []string     `json:"destinations"`
	Countries          []string     `json:"countries"`
	Addrs              []netip.Addr `json:"addrs"`    // where its calls come from (the channels' transport address)
	Contacts           []netip.Addr `json:"contacts"` // its registered contacts (the Contact header: client-written, not proof)
	Risk               int          `json:"risk"`
	Contain            bool         `json:"contain"` // the fraud rules would contain it
	Channels           []liveCall   `json:"channels"`
}

// snapshotCalls lists the originating endpoint channels that are up.
func snapshotCalls(ctx context.Context, s amiSession, nums *numbers.Normalizer) (map[string][]liveCall, error) {
	_, evs, err := s.ActionList(ctx, ami.NewAction("CoreShowChannels"))
	if err != nil {
		return nil, fmt.Errorf("CoreShowChannels: %w", err)
	}
	out := map[string][]liveCall{}
	for _, e := range evs {
		if e.Event() != "CoreShowChannel" {
			continue
		}
		uid, lid := e.Get("Uniqueid"), e.Get("Linkedid")
		if lid != "" && uid != lid {
			continue // the far leg of someone's call
		}
		tech, ext, ok := calls.SplitChannel(e.Get("Channel"))
		if !ok {
			continue
		}
		lc := liveCall{Channel: e.Get("Channel"), Dialled: e.Get("Exten"), State: e.Get("ChannelStateDesc"), Duration: e.Get("Duration"), id: uid}
		if r := nums.Normalize(lc.Dialled); r != nil {
			if c, ok := r.BestCandidate(); ok && c.Valid {
				lc.E164, lc.Country, lc.Intl = c.E164, c.Country, c.International
				if lc.Country == "" {
					lc.Country = fmt.Sprintf("+%d", c.CountryCode)
				}
			}
		}
		if tech == "PJSIP" {
			if v, err := s.Getvar(ctx, lc.Channel, "CHANNEL(pjsip,remote_addr)"); err == nil {
				lc.Addr = parseHostPort(v)
			}
		}
		out[ext] = append(out[ext], lc)
	}
	return out, nil
}

// parseHostPort reads "203.0.113.159:5062", "[2001:db8::1]:5060" or a bare address.
func parseHostPort(s string) netip.Addr {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return a.Unmap()
	}
	return netip.Addr{}
}

// contactAddrs lists the registered contacts, endpoint → addresses, with
// PJSIPShowContacts (write class system, which the documented AMI user
// has; the CLI's "pjsip show contacts" would need command). Asterisk
// answers an error when no contact is registered: that is an empty list.
func contactAddrs(ctx context.Context, s amiSession) (map[string][]netip.Addr, error) {
	_, evs, err := s.ActionList(ctx, ami.NewAction("PJSIPShowContacts"))
	if err != nil {
		var ae *ami.ActionError
		if errors.As(err, &ae) && strings.Contains(strings.ToLower(ae.Message), "no contacts found") {
			return map[string][]netip.Addr{}, nil
		}
		return nil, fmt.Errorf("PJSIPShowContacts: %w", err)
	}
	out := map[string][]netip.Addr{}
	for _, e := range evs {
		if e.Event() != "ContactList" {
			continue
		}
		ep := e.Get("Endpoint")
		if ep == "" {
			ep, _, _ = strings.Cut(e.Get("ObjectName"), ";@") // "1004;@a1b2c3": the AoR
		}
		a := uriHost(e.Get("Uri"))
		if ep != "" && a.IsValid() && !slices.Contains(out[ep], a) {
			out[ep] = append(out[ep], a)
		}
	}
	return out, nil
}

// uriHost reads the address of "sip:1004@203.0.113.159:5060;transport=udp".
func uriHost(uri string) netip.Addr {
	host := strings.TrimPrefix(strings.TrimPrefix(uri, "sips:"), "sip:")
	if i := strings.LastIndexByte(host, '@'); i >= 0 {
		host = host[i+1:]
	}
	if i := strings.IndexAny(host, ";>?"); i >= 0 {
		host = host[:i]
	}
	a := parseHostPort(host)
	if !a.IsValid() {
		if h, _, err := net.SplitHostPort(host); err == nil {
			a = parseHostPort(h)
		}
	}
	return a
}

// liveState keeps the engine across refreshes so the rules see history.
type liveState struct {
	eng    *fraud.Engine
	seen   map[string]bool
	trunks []string
	// noContacts, once set, says why contacts are no longer asked for
	// (an action Asterisk refuses is not polled again).
	noContacts string
	warn       io.Writer
}

func (ls *liveState) view(ctx context.Context, s amiSession, nums *numbers.Normalizer) ([]extView, error) {
	snap, err := snapshotCalls(ctx, s, nums)
	if err != nil {
		return nil, err
	}
	var contacts map[string][]netip.Addr
	if ls.noContacts == "" {
		contacts, err = contactAddrs(ctx, s)
		if err != nil {
			ls.noContacts = err.Error()
			if ls.warn != nil {
				fmt.Fprintf(ls.warn, "pbxguard: the CONTACTS column stays empty: %v (the AMI user needs write = system for PJSIPShowContacts); not asked again\n", err)
			}
		}
	}
	now := time.Now()
	views := make([]extView, 0, len(snap))
	for ext, lcs := range snap {
		if slices.Contains(ls.trunks, ext) {
			continue
		}
		v := extView{Extension: ext, Calls: len(lcs), Channels: lcs, Destinations: []string{}, Countries: []string{}, Addrs: []netip.Addr{}, Contacts: []netip.Addr{}}
		for _, lc := range lcs {
			if !ls.seen[lc.id] {
				ls.seen[lc.id] = true
				ls.eng.Observe(calls.Update{Kind: calls.CallStarted, Call: calls.Call{ID: lc.id, Channel: lc.Channel, Extension: ext,
					Dialled: lc.Dialled, SourceAddr: lc.Addr, Start: now, Live: true}}, now)
			}
			if lc.Intl {
				v.InternationalCalls++
				if !slices.Contains(v.Countries, lc.Country) {
					v.Countries = append(v.Countries, lc.Country)
				}
			}
			if lc.Dialled != "" && !slices.Contains(v.Destinations, lc.Dialled) {
				v.Destinations = append(v.Destinations, lc.Dialled)
			}
			if lc.Addr.IsValid() && !slices.Contains(v.Addrs, lc.Addr) {
				v.Addrs = append(v.Addrs, lc.Addr)
			}
		}
		v.Contacts = append(v.Contacts, contacts[ext]...)
		v.Risk = ls.eng.Risk(ext, now)
		v.Contain = ls.eng.Contained(ext)
		views = append(views, v)
	}
	slices.SortFunc(views, func(a, b extView) int {
		if a.Risk != b.Risk {
			return b.Risk - a.Risk
		}
		return strings.Compare(a.Extension, b.Extension)
	})
	return views, nil
}

func printView(w io.Writer, views []extView, at time.Time) {
	fmt.Fprintf(w, "pbxguard incident  %s  %d extensions with live calls\n", at.UTC().Format(time.RFC3339), len(views))
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "EXT\tRISK\tCALLS\tINTL\tCOUNTRIES\tCALLS FROM\tCONTACTS\tDESTINATIONS")
	for _, v := range views {
		dest := v.Destinations
		more := ""
		if len(dest) > 4 {
			more = fmt.Sprintf(" +%d", len(dest)-4)
			dest = dest[:4]
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s%s\n", fraud.Escape(v.Extension, 0), v.Risk, v.Calls, v.InternationalCalls,
			strings.Join(v.Countries, ","), joinAddrs(v.Addrs), joinAddrs(v.Contacts), fraud.Escape(strings.Join(dest, ","), 0), more)
	}
	tw.Flush()
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func runLive(cmd *cobra.Command, nf *numberFlags, lf *liveFlags) error {
	if err := nf.fromConfig(cmd, lf); err != nil {
		return err
	}
	nums, err := nf.normalizer()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := dialAMI(ctx, lf)
	if err != nil {
		return err
	}
	defer s.Close()
	if lf.contain != "" {
		return runContain(ctx, cmd, nums, s, nf, lf)
	}
	eng, err := fraud.NewEngine(fraud.Config{IgnoreExtensions: nf.trunks}, nums)
	if err != nil {
		return usageErr("incident: %v", err)
	}
	ls := &liveState{eng: eng, seen: map[string]bool{}, trunks: nf.trunks, warn: cmd.ErrOrStderr()}
	out := cmd.OutOrStdout()
	if lf.interval <= 0 {
		lf.interval = 2 * time.Second
	}
	for {
		views, err := ls.view(ctx, s, nums)
		if err != nil {
			return failErr(err)
		}
		if lf.asJSON {
			if err := json.NewEncoder(out).Encode(map[string]any{"time": time.Now().UTC(), "extensions": views}); err != nil {
				return failErr(err)
			}
		} else {
			printView(out, views, time.Now())
		}
		if lf.once {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(lf.interval):
		}
	}
}

// runContain hangs up EXT's calls, locks it and bans the addresses its
// calls come from (or, with no call up, where it is registered from).
func runContain(ctx context.Context, cmd *cobra.Command, nums *numbers.Normalizer, s amiSession, nf *numberFlags, lf *liveFlags) error {
	ext := lf.contain
	snap, err := snapshotCalls(ctx, s, nums)
	if err != nil {
		return failErr(err)
	}
	var live []calls.Call
	var addrs []netip.Addr
	for _, lc := range snap[ext] {
		live = append(live, calls.Call{Channel: lc.Channel, Extension: ext, Dialled: lc.Dialled, Live: true})
		if lc.Addr.IsValid() && !slices.Contains(addrs, lc.Addr) {
			addrs = append(addrs, lc.Addr)
		}
	}
	// Contact headers are written by the client: an attacker can name any
	// host there. They are shown, and banned only with --ban-contacts.
	all, err := contactAddrs(ctx, s)
	if err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "pbxguard: registered contacts not listed: %v\n", err)
	}
	contacts := all[ext]
	from := "its live calls (the channels' transport address)"
	if lf.banContacts {
		for _, a := range contacts {
			if !slices.Contains(addrs, a) {
				addrs = append(addrs, a)
			}
		}
		from += " and its registered contacts"
	}
	sock := lf.socket
	if sock == "" {
		sock = config.DefaultSocket
	}
	client := daemon.NewClient(sock)
	resp, err := fraud.NewResponder(nf.responderSettings(cmd, lf), fraud.Deps{AMI: s,
		Banner: fraud.BanFunc(func(ctx context.Context, a netip.Addr, d time.Duration, reason string) error {
			_, err := client.Ban(ctx, netip.PrefixFrom(a, a.BitLen()), d, "fraud", reason)
			return err
		})})
	if err != nil {
		return failErr(err)
	}
	f := fraud.Finding{
		Rule: "manual_contain", Severity: fraud.SeverityCritical, Score: 100, Time: time.Now(), Extension: ext,
		Addrs: addrs, Reason: "contained by hand (pbxguard incident --contain)",
		Response: fraud.Response{Hangup: true, Lock: true, Ban: true},
	}
	inc := resp.Respond(ctx, f, live)
	out := cmd.OutOrStdout()
	if lf.asJSON {
		if err := json.NewEncoder(out).Encode(inc); err != nil {
			return failErr(err)
		}
	} else {
		dry := ""
		if lf.dryRun {
			dry = " (dry run: nothing done)"
		}
		fmt.Fprintf(out, "contain extension %s%s: %d live calls, addresses from %s: %v\n", ext, dry, len(live), from, addrs)
		for _, a := range inc.Actions {
			res := a.Result
			switch {
			case lf.dryRun:
				res = "would do"
			case !a.OK():
				res = "FAILED: " + a.Error
			case a.Result == fraud.ResultSkipped:
				res = "skipped: " + a.Note
			}
			if len(a.Attempts) > 1 {
				res += fmt.Sprintf(" (%d attempts, %.0f ms)", len(a.Attempts), a.TookMS)
			}
			fmt.Fprintf(out, "  %-7s %-28s %s\n", a.Kind, a.Target, res)
		}
		if len(addrs) == 0 {
			fmt.Fprintln(out, "  no address to ban: it has no live call (add --ban-contacts to ban its registered contacts)")
		}
		if len(contacts) > 0 && !lf.banContacts {
			fmt.Fprintf(out, "  registered contacts (client-written, not banned without --ban-contacts): %s\n", joinAddrs(contacts))
		}
		fmt.Fprintf(out, "next: change the password of %s, then `pbxguard incident unlock %s`\n", ext, ext)
	}
	for _, a := range inc.Actions {
		if !a.OK() {
			return failErr(fmt.Errorf("incident --contain %s: %s %s: %s", ext, a.Kind, a.Target, a.Error))
		}
	}
	return nil
}

func runUnlock(cmd *cobra.Command, nf *numberFlags, lf *liveFlags, ext string) error {
	if err := nf.fromConfig(cmd, lf); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := dialAMI(ctx, lf)
	if err != nil {
		return err
	}
	defer s.Close()
	set := nf.responderSettings(cmd, lf)
	maint := ""
	if set.Maintenance {
		maint = ", PJSIP maintenance off"
	}
	report := func(done bool) error {
		if lf.unlockJSON {
			return writeJSON(cmd.OutOrStdout(), map[string]any{"extension": ext, "unlocked": done, "dry_run": !done,
				"astdb_key": fraud.LockFamily + "/" + ext, "maintenance_off": set.Maintenance})
		}
		verb := "unlocked %s (deleted AstDB %s/%s%s)\n"
		if !done {
			verb = "would unlock %s (DBDel %s/%s%s)\n"
		}
		_, err := fmt.Fprintf(cmd.OutOrStdout(), verb, ext, fraud.LockFamily, ext, maint)
		return err
	}
	if lf.dryRun {
		return report(false)
	}
	resp, err := fraud.NewResponder(set, fraud.Deps{AMI: s})
	if err != nil {
		return failErr(err)
	}
	if err := resp.Unlock(ctx, ext); err != nil {
		return failErr(err)
	}
	return report(true)
}

// responderSettings are the fraud: settings of the configuration (or the
// defaults without one) with the command line's --ban-for and --dry-run
// on top: the CLI acts as the daemon would (hangup_cause, pjsip_hangup,
// pjsip_hangup_code, maintenance, never_ban). The incident log stays the
// daemon's.
func (nf *numberFlags) responderSettings(cmd *cobra.Command, lf *liveFlags) *fraud.Settings {
	set := fraud.Settings{Country: nf.country, HangupCause: 21, PJSIPHangupCode: 403, BanFor: lf.banFor}
	if nf.settings != nil {
		set = *nf.settings
		if f := cmd.Flag("ban-for"); f != nil && f.Changed {
			set.BanFor = lf.banFor
		}
	}
	set.DryRun = set.DryRun || lf.dryRun
	set.IncidentLog = ""
	return &set
}
