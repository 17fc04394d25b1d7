package kafkaclient_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
)

// TestTLSAndSCRAM: against a broker that takes only TLS and SCRAM-SHA-512,
// a client with the CA and the password produces; a wrong password fails
// Ping at once (ProduceSync would wait for its deadline); a
// client without TLS is not served; credentials without TLS to another
// host than loopback are refused before any dial.
func TestTLSAndSCRAM(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "broker"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-512", "verbatim-process", "s3cret"),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}))
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
