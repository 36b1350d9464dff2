package daemon

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/sensor"
)

// sensorWorker runs the packet-level SIP sensor: it loads the sensor's
// nftables table (copy SIP to an NFLOG group, rate-limited per source in
// the kernel), reads the group, and hands the sensor's events to the jail
// like any other event. The table is removed when the worker stops.
func sensorWorker(sc config.Sensor, netns string, log *slog.Logger) *Worker {
	if !sc.Enabled {
		return nil
	}
	if netns != "" {
		return &Worker{Name: "sensor", Run: func(ctx context.Context, d *Daemon) error {
			return fmt.Errorf("sensor: not available when the firewall runs in another network namespace (%s): run the daemon inside it", netns)
		}}
	}
	tap := sensor.TapConfig{Group: uint16(sc.NFLOGGroup), Snaplen: uint32(sc.Snaplen), UDPPorts: sc.UDPPorts,
		TCPPorts: sc.TCPPorts, RatePerSource: sc.RatePerSource, Netns: netns}
	return &Worker{Name: "sensor", Run: func(ctx context.Context, d *Daemon) error {
		log := log.With("component", "sensor")
		var mu sync.Mutex
		var stats sensor.Stats
		var drops uint64
		m := newSensorMetrics(func() (sensor.Stats, uint64) { mu.Lock(); defer mu.Unlock(); return stats, drops })
		if err := d.metrics.Registry.Register(m); err != nil {
			log.Warn("sensor metrics", "err", err)
		} else {
			defer d.metrics.Registry.Unregister(m)
		}
		if err := tap.Install(ctx); err != nil {
			d.setSensorState(err)
			return err
		}
		defer func() {
			uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tap.Uninstall(uctx); err != nil {
				log.Warn("removing the sensor's table", "err", err)
			}
		}()
		t, err := sensor.OpenTap(tap.Group, tap.Snaplen)
		if err != nil {
			d.setSensorState(err)
			return err
		}
		defer t.Close()
		var injectErr error
		s := sensor.New(sensor.Config{UDPPorts: sc.UDPPorts, TCPPorts: sc.TCPPorts}, func(ev *event.Event) {
			if err := d.Inject(ctx, sc.Jail, ev); err != nil && injectErr == nil {
				injectErr = err
			}
		})
		capture, err := openCapture(sc, log)
		if err != nil {
			d.setSensorState(err)
			return err
		}
		defer capture.close()
		d.setSensorState(nil)
		log.Info("sensor watching SIP", "udp", sc.UDPPorts, "tcp", sc.TCPPorts, "nflog_group", sc.NFLOGGroup, "snaplen", sc.Snaplen, "rate_per_source", sc.RatePerSource, "jail", sc.Jail)
		err = t.Run(ctx, func(ip []byte, at time.Time) {
			capture.write(ip, at)
			s.HandleIP(ip, at)
			mu.Lock()
			stats, drops = s.Stats, t.Drops
			mu.Unlock()
		})
		if err != nil {
			d.setSensorState(err)
			return err
		}
		if injectErr != nil && ctx.Err() == nil {
			return fmt.Errorf("sensor: %w", injectErr)
		}
		return nil
	}}
}

// sensorCapture writes the packets the kernel copies to a pcap file
// (sensor.capture_file), bounded by sensor.capture_max_mb.
type sensorCapture struct {
	f       *os.File
	w       *bufio.Writer
	n, max  int64
	last    time.Time
	log     *slog.Logger
	stopped bool
}

func openCapture(sc config.Sensor, log *slog.Logger) (*sensorCapture, error) {
	if sc.CaptureFile == "" {
		return nil, nil
	}
	f, err := os.OpenFile(sc.CaptureFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sensor: capture file: %w", err)
	}
	c := &sensorCapture{f: f, w: bufio.NewWriterSize(f, 256<<10), max: sc.CaptureMax, log: log}
	if err := sensor.WritePcapHeader(c.w); err != nil {
		f.Close()
		return nil, err
	}
	c.n = 24
	log.Info("sensor: capturing SIP packets", "file", sc.CaptureFile, "max_bytes", sc.CaptureMax)
	return c, nil
}

func (c *sensorCapture) write(ip []byte, at time.Time) {
	if c == nil || c.stopped {
		return
	}
	if c.n+16+int64(len(ip)) > c.max {
		c.stopped = true
		c.w.Flush()
		c.log.Warn("sensor: capture file full; capturing stopped", "bytes", c.n)
		return
	}
	if err := sensor.WritePcapRecord(c.w, at, ip); err != nil {
		c.stopped = true
		c.log.Warn("sensor: capture write failed; capturing stopped", "err", err)
		return
	}
	c.n += 16 + int64(len(ip))
	if at.Sub(c.last) > time.Second {
		c.last = at
		c.w.Flush()
	}
}

func (c *sensorCapture) close() {
	if c == nil {
		return
	}
	c.w.Flush()
	c.f.Close()
}

func (d *Daemon) setSensorState(err error) {
	if err != nil {
		d.log.Error("sensor down", "err", err)
	}
}

// sensorMetrics exports the sensor's counters, read at scrape time.
type sensorMetrics struct {
	get                                       func() (sensor.Stats, uint64)
	packets, parsed, notSIP, drops, open, evs *prometheus.Desc
}

func newSensorMetrics(get func() (sensor.Stats, uint64)) *sensorMetrics {
	return &sensorMetrics{get: get,
		packets: prometheus.NewDesc("pbxguard_sensor_packets_total", "SIP packets the kernel copied to the sensor.", nil, nil),
		parsed:  prometheus.NewDesc("pbxguard_sensor_parsed_total", "Packets parsed as SIP messages.", nil, nil),
		notSIP:  prometheus.NewDesc("pbxguard_sensor_not_sip_total", "Packets on the SIP ports that were not SIP.", nil, nil),
		drops:   prometheus.NewDesc("pbxguard_sensor_kernel_drops_total", "Times the kernel reported lost NFLOG packets (socket buffer full).", nil, nil),
		open:    prometheus.NewDesc("pbxguard_sensor_transactions_open", "Requests waiting for the PBX's final answer.", nil, nil),
		evs:     prometheus.NewDesc("pbxguard_sensor_events_total", "Events the sensor made, per kind.", []string{"kind"}, nil),
	}
}

func (m *sensorMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.packets, m.parsed, m.notSIP, m.drops, m.open, m.evs} {
		ch <- d
	}
}

func (m *sensorMetrics) Collect(ch chan<- prometheus.Metric) {
	st, drops := m.get()
	ch <- prometheus.MustNewConstMetric(m.packets, prometheus.CounterValue, float64(st.Packets))
	ch <- prometheus.MustNewConstMetric(m.parsed, prometheus.CounterValue, float64(st.Parsed))
	ch <- prometheus.MustNewConstMetric(m.notSIP, prometheus.CounterValue, float64(st.NotSIP))
	ch <- prometheus.MustNewConstMetric(m.drops, prometheus.CounterValue, float64(drops))
	ch <- prometheus.MustNewConstMetric(m.open, prometheus.GaugeValue, float64(st.OpenTxns))
	for k, n := range st.Events {
		if event.Kind(k).IsFailure() || event.Kind(k) == event.AuthSuccess || event.Kind(k) == event.ChallengeSent {
			ch <- prometheus.MustNewConstMetric(m.evs, prometheus.CounterValue, float64(n), event.Kind(k).String())
		}
	}
}
