package stacktest

import (
	"os"
	"strings"
	"testing"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
)

// KafkaFor is how a helper shared by tests on kfake and on the local
// stack reaches brokers: with the stack's security when they are the
// stack's, plainly otherwise.
func KafkaFor(brokers []string, clientID string) kafkaclient.Config {
	c := kafkaclient.Config{Brokers: brokers, ClientID: clientID}
	if strings.Join(brokers, ",") == os.Getenv("VERBATIM_KAFKA_BROKERS") {
		return c.WithEnv()
	}
	return c
}

// PlainKafka clears the stack's Kafka security from the environment for
// the rest of the test: for commands run against kfake, which speaks
// neither TLS nor SASL.
func PlainKafka(t testing.TB) {
	t.Helper()
	for _, v := range []string{"TLS", "CA", "CERT", "KEY", "SASL_USER", "SASL_PASSWORD", "INSECURE"} {
		t.Setenv("VERBATIM_KAFKA_"+v, "")
	}
}
