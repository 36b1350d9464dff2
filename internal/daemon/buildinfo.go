package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxguard/pbxguard/internal/version"
)

// buildInfo is pbxguard_build_info: always 1, the build's identity in its
// labels (the Prometheus convention for joining a version onto any series).
func buildInfo() prometheus.Collector {
	in := version.Get()
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pbxguard_build_info", Help: "pbxguard's version, commit and Go version (always 1).",
	}, []string{"version", "commit", "build_date", "goversion"})
	g.WithLabelValues(in.Version, in.Commit, in.Date, in.GoVersion).Set(1)
	return g
}
