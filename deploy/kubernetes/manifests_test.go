package kubernetes

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// TestManifests: verbatim.yaml's objects are each of a kind Verbatim
// uses, decode strictly (an unknown or misspelt field fails), and keep
// the rules below.
func TestManifests(t *testing.T) {
	raw, err := os.ReadFile("verbatim.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The environment variables the roles read, from their sources.
	var code bytes.Buffer
	for _, dir := range []string{"../../cmd/verbatim", "../../internal/keys", "../../internal/objstore"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			code.Write(b)
		}
	}
	var config *corev1.ConfigMap
	var pods []struct {
		name string
		spec corev1.PodSpec
	}
	kinds := map[string]int{}
	for i, doc := range regexp.MustCompile(`(?m)^---$`).Split(string(raw), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var head struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		kinds[head.Kind]++
		var obj any
		switch head.Kind {
		case "Namespace":
			obj = &corev1.Namespace{}
		case "ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "ConfigMap":
			config = &corev1.ConfigMap{}
			obj = config
		case "Service":
			obj = &corev1.Service{}
		case "StatefulSet":
			obj = &appsv1.StatefulSet{}
		case "Deployment":
			obj = &appsv1.Deployment{}
		case "Job":
			obj = &batchv1.Job{}
		case "NetworkPolicy":
			obj = &networkingv1.NetworkPolicy{}
		case "PodDisruptionBudget":
			obj = &policyv1.PodDisruptionBudget{}
		default:
			t.Fatalf("document %d: kind %q is not one Verbatim deploys", i, head.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("document %d (%s): %v", i, head.Kind, err)
		}
		switch o := obj.(type) {
		case *appsv1.StatefulSet:
			pods = append(pods, struct {
				name string
				spec corev1.PodSpec
			}{o.Name, o.Spec.Template.Spec})
			if !slices.ContainsFunc(o.Spec.Template.Spec.Containers, func(c corev1.Container) bool { return len(c.Args) > 0 && c.Args[0] == "process" }) {
				t.Errorf("StatefulSet %s: only the processor needs a stable name", o.Name)
			}
		case *appsv1.Deployment:
			pods = append(pods, struct {
				name string
				spec corev1.PodSpec
			}{o.Name, o.Spec.Template.Spec})
			for _, c := range o.Spec.Template.Spec.Containers {
				if len(c.Args) > 0 && c.Args[0] == "process" {
					t.Errorf("Deployment %s runs the processor: it must be a StatefulSet (a stable --instance, its transactional id)", o.Name)
				}
			}
		case *batchv1.Job:
			pods = append(pods, struct {
				name string
				spec corev1.PodSpec
			}{o.Name, o.Spec.Template.Spec})
		}
	}
	if kinds["StatefulSet"] != 1 || kinds["Deployment"] < 4 || config == nil || kinds["NetworkPolicy"] == 0 {
		t.Fatalf("objects: %v", kinds)
	}
	secretName := regexp.MustCompile(`PASSWORD|TOKEN$|SECRET|ACCESS_KEY`)
	for _, p := range pods {
		if p.spec.SecurityContext == nil || p.spec.SecurityContext.RunAsNonRoot == nil || !*p.spec.SecurityContext.RunAsNonRoot {
			t.Errorf("%s: the pod may run as root", p.name)
		}
		for _, c := range p.spec.Containers {
			where := p.name + "/" + c.Name
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s: cpu and memory requests and limits are required", where)
			}
			if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: no privilege escalation and a read-only root filesystem are required", where)
			}
			if !strings.Contains(c.Image, ":") || strings.HasSuffix(c.Image, ":latest") {
				t.Errorf("%s: image %q is not pinned", where, c.Image)
			}
			for _, a := range c.Args {
				if secretName.MatchString(strings.ToUpper(a)) {
					t.Errorf("%s: argument %q looks like a secret: secrets come from the environment", where, a)
				}
			}
			for _, e := range c.Env {
				if !strings.Contains(code.String(), `"`+e.Name+`"`) {
					t.Errorf("%s: %s is read by no role", where, e.Name)
				}
				switch {
				case secretName.MatchString(e.Name) && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil):
					t.Errorf("%s: %s must come from a Secret", where, e.Name)
				case e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil:
					if _, ok := config.Data[e.ValueFrom.ConfigMapKeyRef.Key]; !ok {
						t.Errorf("%s: %s names ConfigMap key %q, which it lacks", where, e.Name, e.ValueFrom.ConfigMapKeyRef.Key)
					}
				}
			}
			if p.spec.RestartPolicy == corev1.RestartPolicyOnFailure {
				continue // a Job: nothing serves
			}
			ports := map[string]bool{}
			for _, cp := range c.Ports {
				ports[cp.Name] = true
			}
			for probe, want := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
				if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want || !ports[probe.HTTPGet.Port.String()] {
					t.Errorf("%s: a probe of %s on a declared port is required", where, want)
				}
			}
			if !ports["ops"] || !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "VERBATIM_OPS_ADDR" }) {
				t.Errorf("%s: the operations endpoint (VERBATIM_OPS_ADDR, port ops) is required", where)
			}
		}
	}
	t.Logf("%d objects: %v", len(pods), kinds)
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
