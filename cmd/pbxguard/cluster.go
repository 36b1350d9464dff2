package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pbxguard/pbxguard/internal/cluster"
	"github.com/pbxguard/pbxguard/internal/daemon"
)

// clusterCommands returns the `cluster` group: the embedded NATS server
// and the cluster's status.
func clusterCommands() []*cobra.Command {
	grp := &cobra.Command{
		Use:   "cluster",
		Short: "Share bans between pbxguard nodes over NATS JetStream",
	}
	var so cluster.ServerOptions
	serve := &cobra.Command{
		Use:   "serve --listen ADDR --store DIR",
		Short: "Run a NATS server with JetStream for the nodes (for setups without NATS)",
		Long: `Run an embedded NATS server with JetStream that pbxguard nodes share bans
through (cluster.nats.urls: [nats://ADDR]). A stock nats-server works the
same. With --cluster and --routes, several of them form a NATS cluster.
Runs until SIGTERM or SIGINT.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if so.Listen == "" || so.StoreDir == "" {
				return usageErr("cluster serve needs --listen host:port and --store DIR")
			}
			s, err := cluster.StartServer(so)
			if err != nil {
				return usageErr("%v", err)
			}
			slog.Info("nats server with JetStream running", "url", s.ClientURL(), "store", so.StoreDir, "routes", so.Routes)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			<-ctx.Done()
			s.Shutdown()
			s.WaitForShutdown()
			return nil
		},
	}
	serve.Flags().StringVar(&so.Listen, "listen", "", "client listener host:port (e.g. 127.0.0.1:4222)")
	serve.Flags().StringVar(&so.StoreDir, "store", "", "JetStream storage directory")
	serve.Flags().StringVar(&so.Name, "name", "", "server name (default from the port)")
	serve.Flags().StringVar(&so.Cluster, "cluster", "", "route listener host:port, to form a cluster with --routes")
	serve.Flags().StringSliceVar(&so.Routes, "routes", nil, "nats-route://host:port of the other servers")

	var cfgPath, node string
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the NATS connection, the ban stream, this node's lag and the nodes seen",
		Long: `Show what NATS holds for this node (read from NATS, so it works while the
daemon is stopped): the server, the ban stream, this node's consumer lag,
every node that published with its message count and last message, and
the daemon's outbox when its metrics listener answers. Exit 3 when NATS
cannot be reached.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.ErrOrStderr(), cfgPath, true)
			if err != nil {
				return err
			}
			if !cfg.Cluster.Enabled {
				return usageErr("%s has no cluster: section", cfgPath)
			}
			if node != "" {
				cfg.Cluster.Node = node
			}
			o, err := daemon.ClusterOptions(cfg.Cluster, slog.Default())
			if err != nil {
				return usageErr("%v", err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
			defer cancel()
			rep, err := cluster.Inspect(ctx, o)
			if err != nil {
				return failErr(err)
			}
			if cfg.Metrics.Listen != "" {
				if n, ok := scrapeGauge(ctx, cfg.Metrics.Listen, "pbxguard_cluster_outbox_length"); ok {
					rep.Outbox = &n
				}
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printClusterReport(cmd.OutOrStdout(), rep)
			return nil
		},
	}
	status.Flags().StringVarP(&cfgPath, "config", "c", defaultConfigPath, "configuration file")
	status.Flags().StringVar(&node, "node", "", "node to report the lag of (default: cluster.node of the config)")
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	grp.AddCommand(serve, status)
	return []*cobra.Command{grp}
}

func printClusterReport(w io.Writer, r cluster.Report) {
	fmt.Fprintf(w, "node %s, connected to %s\n", r.Node, r.Server)
	fmt.Fprintf(w, "stream %s: %d messages, %d bytes\n", r.Stream, r.Messages, r.Bytes)
	fmt.Fprintf(w, "consumer %s: lag %d, awaiting ack %d\n", r.Consumer, r.Lag, r.Pending)
	if r.Outbox != nil {
		fmt.Fprintf(w, "outbox: %d waiting\n", *r.Outbox)
	} else {
		fmt.Fprintln(w, "outbox: unknown (the daemon's metrics listener did not answer)")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tMESSAGES\tLAST MESSAGE\tLAST")
	for _, n := range r.Nodes {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s %s\n", n.Node, n.Messages, n.LastMessage.Format(time.RFC3339), n.LastOp, n.LastPrefix)
	}
	tw.Flush()
}

// scrapeGauge reads one unlabelled metric from a Prometheus text endpoint.
func scrapeGauge(ctx context.Context, listen, name string) (int64, bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+listen+"/metrics", nil)
	if err != nil {
		return 0, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int64(f), err == nil
		}
	}
	return 0, false
}
