package kafkaclient_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/stacktest"
)

// TestTLSAndSCRAM: against a broker that takes only TLS and SCRAM-SHA-512,
// a client with the CA and the password produces; a wrong password fails
// Ping at once (ProduceSync would wait for its deadline); a
// client without TLS is not served; credentials without TLS to another
// host than loopback are refused before any dial.
func TestTLSAndSCRAM(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	authority := stacktest.NewCA(t)
	broker, _, _ := authority.Issue("127.0.0.1")
	ca := authority.File
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-512", "verbatim-process", "s3cret"),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{broker}, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	client := func(cfg kafkaclient.Config) *kgo.Client {
		t.Helper()
		cfg.Brokers = brokers
		cl, err := kafkaclient.New(cfg, kgo.RequestRetries(0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	good := client(kafkaclient.Config{CAFile: ca, SASLUser: "verbatim-process", SASLPassword: "s3cret"})
	if err := good.Ping(ctx); err != nil {
		t.Fatalf("the right password over TLS: %v", err)
	}
	if err := good.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	defer pcancel()
	// (kfake closes the connection where Kafka answers
	// SASL_AUTHENTICATION_FAILED: the error is not the same, its promptness is.)
	if err := client(kafkaclient.Config{CAFile: ca, SASLUser: "verbatim-process", SASLPassword: "wrong"}).Ping(pctx); err == nil || pctx.Err() != nil {
		t.Fatalf("a wrong password: %v", err)
	}
	if err := client(kafkaclient.Config{SASLUser: "verbatim-process", SASLPassword: "s3cret"}).Ping(pctx); err == nil {
		t.Fatal("a client without TLS was served")
	}
	if err := client(kafkaclient.Config{TLS: true, SASLUser: "verbatim-process", SASLPassword: "s3cret"}).Ping(pctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a broker's certificate from an unknown CA: %v", err)
	}
	for _, c := range []struct {
		cfg  kafkaclient.Config
		want string
	}{
		{kafkaclient.Config{Brokers: []string{"kafka-0.kafka:9092"}, SASLUser: "u", SASLPassword: "p"}, "without TLS"},
		{kafkaclient.Config{Brokers: []string{"127.0.0.1:9092"}, SASLUser: "u"}, "has no password"},
		{kafkaclient.Config{Brokers: []string{"kafka-0.kafka:9092"}, SASLUser: "u", SASLPassword: "p", Insecure: true}, ""},
		{kafkaclient.Config{Brokers: []string{"kafka-0.kafka:9093"}, SASLUser: "u", SASLPassword: "p", TLS: true}, ""},
	} {
		if err := c.cfg.Validate(); (c.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}
