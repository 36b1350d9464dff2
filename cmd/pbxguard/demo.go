package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/daemon"
)

// The demo's lab: documentation addresses only, in throwaway namespaces.
const (
	demoPBX      = "198.51.100.10"
	demoAttacker = "203.0.113.66"
	demoSIPPort  = 5060
	demoMaxRetry = 5
)

// demoCommands returns `pbxguard demo`.
func demoCommands() []*cobra.Command {
	var asJSON, dryRun bool
	var packets int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "See pbxguard stop a SIP attacker, in 30 seconds, on a throwaway lab",
		Long: `Run the whole story on a throwaway lab: a PBX and an attacker in two network
namespaces (198.51.100.10 and 203.0.113.66), pbxguard's daemon protecting the
PBX, the attacker sending real SIP REGISTERs to port 5060 while the PBX logs
each failure. After 5 failures the attacker is banned in the kernel
(nftables) and its packets stop arriving. Everything is removed at the end,
also on Ctrl-C.

As root with nft it uses the kernel; otherwise (or with --dry-run) it tells the
same story on the dry-run backend, in-process, without namespaces.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if packets < demoMaxRetry+1 || packets > 200 {
				return usageErr("--packets must be between %d and 200", demoMaxRetry+1)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			res, err := runDemo(ctx, cmd.OutOrStdout(), demoOptions{dryRun: dryRun, packets: packets, quiet: asJSON})
			if asJSON && res != nil {
				writeJSON(cmd.OutOrStdout(), res)
			}
			if err != nil {
				return failErr(err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print only a JSON summary")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "use the dry-run backend even as root")
	cmd.Flags().IntVar(&packets, "packets", 12, "SIP packets the attacker sends")
	return []*cobra.Command{cmd}
}

type demoOptions struct {
	dryRun  bool
	packets int
	quiet   bool
}

// demoResult is the --json summary.
type demoResult struct {
	Mode             string                `json:"mode"` // kernel | dry-run
	Backend          string                `json:"backend"`
	Sent             int                   `json:"packets_sent"`
	SentBeforeBan    int                   `json:"sent_before_ban"`
	ArrivedBeforeBan int                   `json:"arrived_before_ban"`
	SentAfterBan     int                   `json:"sent_after_ban"`
	ArrivedAfterBan  int                   `json:"arrived_after_ban"`
	Banned           bool                  `json:"banned"`
	Bans             []daemon.BanInfo      `json:"bans"`
	Latency          daemon.LatencySummary `json:"ban_latency"`
	Seconds          float64               `json:"seconds"`
}

type demoPrinter struct {
	w     io.Writer
	quiet bool
	step  int
}

func (p *demoPrinter) stepf(format string, args ...any) {
	if p.quiet {
		return
	}
	p.step++
	fmt.Fprintf(p.w, "\n[%d] %s\n", p.step, fmt.Sprintf(format, args...))
}

func (p *demoPrinter) linef(format string, args ...any) {
	if !p.quiet {
		fmt.Fprintf(p.w, "    "+format+"\n", args...)
	}
}

func canUseKernel() (bool, string) {
	if os.Geteuid() != 0 {
		return false, "not root"
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return false, tool + " not installed"
		}
	}
	return true, ""
}

func runDemo(ctx context.Context, w io.Writer, o demoOptions) (*demoResult, error) {
	began := time.Now()
	pr := &demoPrinter{w: w, quiet: o.quiet}
	res := &demoResult{Mode: "kernel", Backend: "nftables"}
	kernel, why := canUseKernel()
	if o.dryRun {
		kernel, why = false, "--dry-run"
	}
	if !kernel {
		res.Mode, res.Backend = "dry-run", "dry-run"
	}
	if !o.quiet {
		fmt.Fprintln(w, "pbxguard demo: a SIP attacker meets pbxguard")
		if !kernel {
			fmt.Fprintf(w, "(%s: running on the dry-run backend, in-process; run as root with nft to see the kernel drop packets)\n", why)
		}
	}

	dir, err := os.MkdirTemp("", "pbxguard-demo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	logPath := filepath.Join(dir, "messages.log")
	if err := os.WriteFile(logPath, nil, 0o640); err != nil {
		return nil, err
	}

	var lab *demoLab
	if kernel {
		pr.stepf("Building the lab: two network namespaces joined by a virtual cable")
		lab, err = newDemoLab(ctx)
		if err != nil {
			if lab != nil {
				lab.Close()
			}
			if ctx.Err() != nil {
				return nil, err
			}
			// A container without the right to make namespaces: tell the
			// story on the dry-run backend instead.
			pr.linef("could not build the lab (%v): falling back to the dry-run backend", err)
			lab, kernel = nil, false
			res.Mode, res.Backend = "dry-run", "dry-run"
		} else {
			defer lab.Close()
			pr.linef("pbx      %-15s  namespace %s  (listens on UDP %d, like Asterisk)", demoPBX, lab.pbx, demoSIPPort)
			pr.linef("attacker %-15s  namespace %s", demoAttacker, lab.attacker)
		}
	}

	pr.stepf("Starting pbxguard on the pbx, following %s", logPath)
	backend := "dry-run"
	if kernel {
		backend = "nftables"
	}
	cfgText := fmt.Sprintf(`state_dir: %s
firewall: {backend: %s}
control: {socket: %s}
metrics: {listen: ""}
# the lab's PBX is not this host's Asterisk: leave /etc/asterisk out of it
audit: {enabled: false}
allowlist_asterisk_trunks: false
jails:
  asterisk:
    detector: asterisk
    files: [%s]
    maxretry: %d
    findtime: 10m
    bantime: 10m
`, filepath.Join(dir, "state"), backend, filepath.Join(dir, "pbxguard.sock"), logPath, demoMaxRetry)
	cfgPath := filepath.Join(dir, "pbxguard.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		return nil, err
	}
	cfg, err := config.Load(cfgPath, config.Options{})
	if err != nil {
		return nil, fmt.Errorf("demo config: %w", err)
	}
	logLevel := slog.LevelError // the demo tells the story itself
	logger := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: logLevel}))
	if !o.quiet {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel}))
	}
	bopts := daemon.BuildOptions{Logger: logger, Version: "demo", StartAtBeginning: true}
	if lab != nil {
		bopts.NetNS = lab.pbx
	}
	b, err := daemon.Build(cfg, bopts)
	if err != nil {
		return nil, err
	}
	dctx, stopDaemon := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(dctx) }()
	defer func() {
		stopDaemon()
		<-done
		if lab == nil {
			b.Backend.Remove(context.Background())
		}
		b.Close()
	}()
	client := daemon.NewClient(cfg.Control.Socket)
	if err := waitReady(ctx, client, done); err != nil {
		return nil, err
	}
	pr.linef("jail asterisk: %d failures in 10m -> ban for 10m, firewall %s", demoMaxRetry, b.Backend.Name())

	var listener *demoListener
	if lab != nil {
		listener, err = lab.listen()
		if err != nil {
			return nil, err
		}
		defer listener.Close()
	}

	pr.stepf("The attacker guesses accounts: %d SIP REGISTERs to %s:%d, one every 150 ms", o.packets, demoPBX, demoSIPPort)
	pr.linef("each one that reaches the PBX makes it log a failure, which pbxguard reads")
	logf, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	var sender *net.UDPConn
	if lab != nil {
		if sender, err = lab.dialFromAttacker(); err != nil {
			return nil, err
		}
		defer sender.Close()
	}
	bannedAt := 0
	for i := 1; i <= o.packets; i++ {
		if ctx.Err() != nil {
			return res, errors.New("interrupted; lab cleaned up")
		}
		ext := 1000 + i
		callID := fmt.Sprintf("demo-%d-%d", os.Getpid(), i)
		arrived := true
		if sender != nil {
			before := listener.count.Load()
			sender.Write(sipRegister(ext, callID))
			arrived = listener.waitAbove(before, 150*time.Millisecond)
		} else {
			time.Sleep(150 * time.Millisecond)
		}
		banned := bannedAt > 0
		if banned {
			res.SentAfterBan++
		} else {
			res.SentBeforeBan++
		}
		res.Sent++
		state := "arrived  -> PBX logs: No matching endpoint found"
		if lab == nil {
			state = "(simulated) PBX logs: No matching endpoint found"
		}
		if arrived {
			if banned {
				res.ArrivedAfterBan++
			} else {
				res.ArrivedBeforeBan++
			}
			if lab == nil && banned {
				state = "(dry-run: the kernel would drop it)"
			} else {
				fmt.Fprintf(logf, "[%s] NOTICE[4242] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '\"%d\" <sip:%d@%s>' failed for '%s:5060' (callid: %s) - No matching endpoint found\n",
					time.Now().Format("Jan _2 15:04:05"), ext, ext, demoPBX, demoAttacker, callID)
			}
		} else {
			state = "DROPPED by the kernel"
		}
		pr.linef("#%-2d REGISTER sip:%d@%s  %s", i, ext, demoPBX, state)
		if !banned {
			// Give the pipeline a moment, then look.
			deadline := time.Now().Add(300 * time.Millisecond)
			for time.Now().Before(deadline) {
				bans, _ := client.Bans(ctx)
				if len(bans) > 0 {
					bannedAt = i
					res.Banned = true
					pr.linef("    pbxguard: %s banned (%s)", bans[0].Addr, bans[0].Reason)
					break
				}
				if i < demoMaxRetry {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}

	pr.stepf("pbxguard bans")
	bans, err := client.Bans(ctx)
	if err != nil {
		return res, err
	}
	res.Bans = bans
	if !o.quiet {
		var sb strings.Builder
		printBans(&sb, bans)
		for _, l := range strings.Split(strings.TrimRight(sb.String(), "\n"), "\n") {
			pr.linef("%s", l)
		}
	}
	if lab != nil {
		if out, err := exec.Command("ip", "netns", "exec", lab.pbx, "nft", "list", "set", "inet", "pbxguard", "banned4").CombinedOutput(); err == nil {
			pr.linef("in the kernel (nft list set inet pbxguard banned4):")
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if strings.Contains(l, "elements") || strings.Contains(l, demoAttacker) {
					pr.linef("  %s", strings.TrimSpace(l))
				}
			}
		}
	}
	if st, err := client.Status(ctx); err == nil {
		res.Latency = st.Latency
	}

	pr.stepf("Result")
	if !o.quiet {
		tw := newTable(w)
		fmt.Fprintln(tw, "    \tsent\tarrived at the PBX")
		fmt.Fprintf(tw, "    before the ban\t%d\t%d\n", res.SentBeforeBan, res.ArrivedBeforeBan)
		if lab != nil {
			fmt.Fprintf(tw, "    after the ban\t%d\t%d\n", res.SentAfterBan, res.ArrivedAfterBan)
		} else {
			fmt.Fprintf(tw, "    after the ban\t%d\t%s\n", res.SentAfterBan, "(dry-run: not dropped)")
		}
		tw.Flush()
		if res.Latency.Count > 0 {
			where := "the kernel"
			if lab == nil {
				where = "the (dry-run) firewall"
			}
			pr.linef("from reading the 5th log line to %s: %.3f ms (pbxguard_ban_latency_seconds)", where, res.Latency.P50ms)
		}
	}
	res.Seconds = time.Since(began).Seconds()
	if !res.Banned {
		return res, errors.New("the attacker was not banned: is the asterisk detector built in? (pbxguard test-log)")
	}
	if lab != nil && res.ArrivedAfterBan > 0 {
		return res, fmt.Errorf("%d packets arrived after the ban", res.ArrivedAfterBan)
	}
	if !o.quiet {
		pr.linef("cleaning up (namespaces, temp files); done in %.1f s", res.Seconds)
		fmt.Fprintln(w, "\nNext: write /etc/pbxguard/pbxguard.yaml (see deploy/), check it with 'pbxguard config check', run 'pbxguard run'.")
	}
	return res, nil
}

func waitReady(ctx context.Context, c *daemon.Client, done <-chan error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := c.Status(ctx); err == nil {
			return nil
		}
		select {
		case err := <-done:
			if err == nil {
				err = errors.New("daemon stopped")
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("daemon did not start within 10 s")
		}
	}
}

func sipRegister(ext int, callID string) []byte {
	return []byte(fmt.Sprintf("REGISTER sip:%s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %s:5060;branch=z9hG4bK-%s\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: \"%d\" <sip:%d@%s>;tag=%s\r\n"+
		"To: \"%d\" <sip:%d@%s>\r\n"+
		"Call-ID: %s\r\n"+
		"CSeq: 1 REGISTER\r\n"+
		"Contact: <sip:%d@%s:5060>\r\n"+
		"User-Agent: pbxguard-demo\r\n"+
		"Content-Length: 0\r\n\r\n",
		demoPBX, demoAttacker, callID, ext, ext, demoPBX, callID, ext, ext, demoPBX, callID, ext, demoAttacker))
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }
