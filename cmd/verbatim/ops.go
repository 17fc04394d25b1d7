package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/internal/ops"
	"github.com/verbatimrec/verbatim/processors"
)

// opsFlags are --ops-addr and --ops-remote, of every long-running role.
type opsFlags struct {
	addr   *string
	remote *bool
}

func addOpsFlags(fs *flag.FlagSet) opsFlags {
	level, format := envOr("VERBATIM_LOG_LEVEL", "warn"), envOr("VERBATIM_LOG_FORMAT", "text")
	set := func() error {
		s, err := ops.ParseLogSettings(level, format)
		if err == nil {
			logSettings.Store(&s)
		}
		return err
	}
	fs.Func("log-level", "log debug, info, warn or error and above (env VERBATIM_LOG_LEVEL; default warn); repeated warnings are rate-limited", func(v string) error {
		level = v
		return set()
	})
	fs.Func("log-format", "log as text or json (env VERBATIM_LOG_FORMAT; default text)", func(v string) error {
		format = v
		return set()
	})
	return opsFlags{
		addr: fs.String("ops-addr", os.Getenv("VERBATIM_OPS_ADDR"), "serve /metrics (Prometheus), /healthz and /readyz on this host:port (env VERBATIM_OPS_ADDR; port 0 picks one); empty: not served"),
		remote: fs.Bool("ops-remote", os.Getenv("VERBATIM_OPS_REMOTE") == "true", "let --ops-addr be a non-loopback address (it has no authentication: "+
			"for a cluster network a policy guards; env VERBATIM_OPS_REMOTE=true)"),
	}
}

// start asks Kafka with the role's credentials, so that a wrong password
// or certificate is said at once (a produce would only wait for its
// deadline), then serves the role's operations endpoint until ctx ends,
// with a readiness check that Kafka answers; it returns the endpoint with
// the client of that check (closed when ctx ends), or nils when
// --ops-addr is empty. Every Kafka client made from kafka afterwards
// reports to the endpoint. It tells stderr where it listens.
func (o opsFlags) start(ctx context.Context, role string, kafka kafkaFlags, clientID string, stderr io.Writer) (*ops.Server, *kgo.Client, error) {
	var srv *ops.Server
	if *o.addr != "" {
		srv = ops.New(role, processors.Revision+" "+version())
		*kafka.metrics = srv.Registry
	}
	ping, err := kafka.client(clientID+"-ready", stderr)
	if err != nil {
		return nil, nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = ping.Ping(pctx)
	cancel()
	if err != nil {
		ping.Close()
		return nil, nil, fmt.Errorf("kafka %s: %w (check the brokers, TLS and the SASL user and password)", *kafka.brokers, err)
	}
	if srv == nil {
		ping.Close()
		return nil, nil, nil
	}
	context.AfterFunc(ctx, ping.Close)
	srv.Check("kafka", ping.Ping)
	addr, err := srv.Serve(ctx, *o.addr, *o.remote, warnLogger(stderr))
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(stderr, "%s: operations endpoint on http://%s (/metrics, /healthz, /readyz)\n", role, addr)
	return srv, ping, nil
}
