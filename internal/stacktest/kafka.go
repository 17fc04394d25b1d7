package stacktest

import (
	"os"
	"strings"
	"testing"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
)

// Kafka is how a test reaches the local stack's Kafka as the administrator:
// its brokers and, from the environment env.sh sets, TLS with the stack's
// client certificate and the administrator's SCRAM user.
func Kafka(t testing.TB, clientID string) kafkaclient.Config {
	t.Helper()
	return kafkaclient.Config{Brokers: strings.Split(Env(t, "VERBATIM_KAFKA_BROKERS"), ","), ClientID: clientID}.WithEnv()
}

// KafkaAs is Kafka as the SCRAM user of role (ingest, process, project,
// api): the identity whose ACLs `verbatim topics --grant` set.
func KafkaAs(t testing.TB, role, clientID string) kafkaclient.Config {
	t.Helper()
	c := Kafka(t, clientID)
	c.SASLUser, c.SASLPassword = "verbatim-"+role, Env(t, "VERBATIM_KAFKA_"+strings.ToUpper(role)+"_PASSWORD")
	return c
}

// RoleEnv is the environment of a child process that runs as role's
// Kafka user: this process's, with the SCRAM user replaced.
func RoleEnv(t testing.TB, role string) []string {
	t.Helper()
	c := KafkaAs(t, role, "")
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VERBATIM_KAFKA_SASL_") {
			env = append(env, kv)
		}
	}
	return append(env, "VERBATIM_KAFKA_SASL_USER="+c.SASLUser, "VERBATIM_KAFKA_SASL_PASSWORD="+c.SASLPassword)
}

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
