package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// built is the demo overlay, rendered by kustomize's own library and
// decoded strictly into the Kubernetes types.
type built struct {
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	services     map[string]*corev1.Service
	hpas         map[string]*autoscalingv2.HorizontalPodAutoscaler
	cronJobs     map[string]*batchv1.CronJob
	claims       map[string]*corev1.PersistentVolumeClaim
}

func buildOverlay(t *testing.T, dir string) built {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	b := built{deployments: map[string]*appsv1.Deployment{}, statefulSets: map[string]*appsv1.StatefulSet{}, services: map[string]*corev1.Service{},
		hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{}, cronJobs: map[string]*batchv1.CronJob{}, claims: map[string]*corev1.PersistentVolumeClaim{}}
	for _, r := range rm.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		var into any
		switch r.GetKind() {
		case "Deployment":
			d := &appsv1.Deployment{}
			into, b.deployments[r.GetName()] = d, d
		case "StatefulSet":
			s := &appsv1.StatefulSet{}
			into, b.statefulSets[r.GetName()] = s, s
		case "Service":
			s := &corev1.Service{}
			into, b.services[r.GetName()] = s, s
		case "HorizontalPodAutoscaler":
			h := &autoscalingv2.HorizontalPodAutoscaler{}
			into, b.hpas[r.GetName()] = h, h
		case "CronJob":
			c := &batchv1.CronJob{}
			into, b.cronJobs[r.GetName()] = c, c
		case "PersistentVolumeClaim":
			c := &corev1.PersistentVolumeClaim{}
			into, b.claims[r.GetName()] = c, c
		default:
			t.Errorf("%s %s: a kind this test does not check", r.GetKind(), r.GetName())
			continue
		}
		if err := decodeStrict(doc, into); err != nil {
			t.Errorf("%s %s: %v", r.GetKind(), r.GetName(), err)
		}
	}
	return b
}

func arg(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func env(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// The Kubernetes manifests: kustomize builds the demo overlay, every object
// decodes strictly, and the rules adrank's processes rely on hold.
func TestK8sKustomize(t *testing.T) {
	b := buildOverlay(t, filepath.Join("..", "deploy", "k8s", "overlays", "demo"))

	services := []string{"adrank-features", "adrank-auction", "adrank-router", "adrank-gateway"}
	rankers := map[string][2]string{"adrank-ranker-feed-v1": {"feed", "v1"}, "adrank-ranker-feed-v2": {"feed", "v2"}, "adrank-ranker-stories-v1": {"stories", "v1"}}
	var all []string
	for name := range b.deployments {
		all = append(all, name)
	}
	for _, want := range append(services, "adrank-ranker-feed-v1", "adrank-ranker-feed-v2", "adrank-ranker-stories-v1") {
		if b.deployments[want] == nil {
			t.Errorf("no Deployment %s among %v", want, all)
		}
	}
	for name, d := range b.deployments {
		if d.Namespace != "adrank" {
			t.Errorf("%s: namespace %q", name, d.Namespace)
		}
		pod := d.Spec.Template.Spec
		if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
			t.Errorf("%s: not forced to run as non-root", name)
		}
		if len(pod.Containers) != 1 {
			t.Fatalf("%s: %d containers", name, len(pod.Containers))
		}
		c := pod.Containers[0]
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: no CPU request or memory limit", name)
		}
		if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
			t.Errorf("%s: root filesystem writable", name)
		}
		if !strings.HasSuffix(c.Image, ":0.1.0") {
			t.Errorf("%s: image %s, not the overlay's tag", name, c.Image)
		}
		sel := d.Spec.Selector.MatchLabels
		for k, v := range sel {
			if d.Spec.Template.Labels[k] != v {
				t.Errorf("%s: selector %s=%s does not select its own pods", name, k, v)
			}
		}
		if name == "adrank-gateway" {
			if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
				t.Errorf("gateway: readiness probe %+v, want GET /healthz", p)
			}
			continue
		}
		// gRPC services: probes on the gRPC health service, on the port
		// they listen on and register in Consul.
		if arg(c.Args, "--listen") != "0.0.0.0:9090" || arg(c.Args, "--advertise") != "$(POD_IP):9090" {
			t.Errorf("%s: --listen %q --advertise %q", name, arg(c.Args, "--listen"), arg(c.Args, "--advertise"))
		}
		for what, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
			if p == nil || p.GRPC == nil || p.GRPC.Port != 9090 {
				t.Errorf("%s: %s probe %+v, want gRPC on 9090", name, what, p)
			}
		}
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
			return e.Name == "POD_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP"
		}) {
			t.Errorf("%s: $(POD_IP) is not the pod's IP", name)
		}
		drain, err := time.ParseDuration(arg(c.Args, "--grace"))
		if grace := d.Spec.Template.Spec.TerminationGracePeriodSeconds; err != nil || grace == nil || time.Duration(*grace)*time.Second <= drain {
			t.Errorf("%s: terminationGracePeriodSeconds %v not above --grace %s", name, grace, arg(c.Args, "--grace"))
		}
		// Rankers: one template, each version's domain and version in its
		// labels, environment and model path.
		if dv, ok := rankers[name]; ok {
			if env(c, "ADRANK_DOMAIN") != dv[0] || env(c, "ADRANK_VERSION") != dv[1] {
				t.Errorf("%s: serves %s/%s", name, env(c, "ADRANK_DOMAIN"), env(c, "ADRANK_VERSION"))
			}
			if sel["adrank.io/domain"] != dv[0] || sel["adrank.io/version"] != dv[1] {
				t.Errorf("%s: selector %v does not tell versions apart", name, sel)
			}
			if arg(c.Args, "--model") != "/models/$(ADRANK_DOMAIN)/$(ADRANK_VERSION).json" {
				t.Errorf("%s: --model %s", name, arg(c.Args, "--model"))
			}
		}
	}
	// The router: shared state in the Redis of the overlay, secrets mounted.
	router := b.deployments["adrank-router"].Spec.Template.Spec
	if a := router.Containers[0].Args; arg(a, "--redis-addr") != "adrank-redis:6379" || arg(a, "--impression-key") == "" || arg(a, "--tokens") == "" {
		t.Errorf("router args %v", a)
	}
	if b.statefulSets["adrank-redis"] == nil || b.services["adrank-redis"] == nil {
		t.Error("no Redis StatefulSet and Service")
	}
	// HPAs for the router and every ranker, each scaling a Deployment of
	// the build.
	for _, name := range []string{"adrank-router", "adrank-ranker-feed-v1", "adrank-ranker-feed-v2", "adrank-ranker-stories-v1"} {
		h := b.hpas[name]
		if h == nil {
			t.Errorf("no HPA %s", name)
			continue
		}
		if ref := h.Spec.ScaleTargetRef; ref.Kind != "Deployment" || b.deployments[ref.Name] == nil {
			t.Errorf("HPA %s scales %s %s, not a Deployment of the build", name, ref.Kind, ref.Name)
		}
	}
	// Every Service selects the pods of a workload of the build.
	for name, s := range b.services {
		found := false
		for _, d := range b.deployments {
			found = found || matches(s.Spec.Selector, d.Spec.Template.Labels)
		}
		for _, st := range b.statefulSets {
			found = found || matches(s.Spec.Selector, st.Spec.Template.Labels)
		}
		if !found {
			t.Errorf("Service %s selects no pods (%v)", name, s.Spec.Selector)
		}
	}
	if b.cronJobs["adrank-batch-feed"] == nil || b.claims["adrank-models"] == nil {
		t.Error("no batch CronJob or models claim in the overlay")
	}
	t.Logf("%d Deployments, %d Services, %d HPAs, %d StatefulSets, %d CronJobs", len(b.deployments), len(b.services), len(b.hpas), len(b.statefulSets), len(b.cronJobs))
}

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Consul comes from HashiCorp's Helm chart, referenced with a pinned
// version, not copied; its values run client agents (adrank registers
// with the agent on its node).
func TestK8sConsulChart(t *testing.T) {
	dir := filepath.Join("..", "deploy", "k8s", "consul")
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kusttypes.Kustomization
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		t.Fatalf("consul kustomization: %v", err)
	}
	if len(k.HelmCharts) != 1 {
		t.Fatalf("%d charts", len(k.HelmCharts))
	}
	c := k.HelmCharts[0]
	if c.Name != "consul" || c.Repo != "https://helm.releases.hashicorp.com" || c.Version == "" || c.ValuesFile == "" {
		t.Errorf("chart %+v: want hashicorp's consul, pinned, with values", c)
	}
	raw, err = os.ReadFile(filepath.Join(dir, c.ValuesFile))
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Client struct {
			Enabled bool `json:"enabled"`
		} `json:"client"`
	}
	if err := yaml.Unmarshal(raw, &values); err != nil || !values.Client.Enabled {
		t.Errorf("values: client agents enabled %v (%v)", values.Client.Enabled, err)
	}
}

// The Dockerfile: multi-stage, a static binary, a non-root final image.
func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "deploy", "docker", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var froms []string
	var user string
	static := false
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			froms = append(froms, f[1])
			user = ""
		case "USER":
			user = f[1]
		case "RUN":
			static = static || strings.Contains(line, "CGO_ENABLED=0 go build")
		}
	}
	if len(froms) < 2 || !strings.Contains(froms[len(froms)-1], "distroless/static") {
		t.Errorf("stages %v: want a build stage and a distroless static final one", froms)
	}
	if !static {
		t.Error("no CGO_ENABLED=0 build: the binary would not be static")
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0") {
		t.Errorf("final stage runs as %q, want a non-root user", user)
	}
}
