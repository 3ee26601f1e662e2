package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// batchCronJobManifest is the Kubernetes manifest that runs `adrankctl batch
// run` as a daily Indexed Job (see deploy/k8s/README.md).
var batchCronJobManifest = filepath.Join("..", "deploy", "k8s", "batch-cronjob.yaml")

// The structs below decode only the fields that the checks read. yaml.v3 maps
// an untagged field to its lowercased name, so every camelCase field is tagged.

type k8sCronJob struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Schedule                   string `yaml:"schedule"`
		ConcurrencyPolicy          string `yaml:"concurrencyPolicy"`
		StartingDeadlineSeconds    *int64 `yaml:"startingDeadlineSeconds"`
		SuccessfulJobsHistoryLimit *int32 `yaml:"successfulJobsHistoryLimit"`
		FailedJobsHistoryLimit     *int32 `yaml:"failedJobsHistoryLimit"`
		JobTemplate                struct {
			Spec k8sJobSpec `yaml:"spec"`
		} `yaml:"jobTemplate"`
	} `yaml:"spec"`
}

type k8sJobSpec struct {
	CompletionMode       string `yaml:"completionMode"`
	Completions          *int32 `yaml:"completions"`
	Parallelism          *int32 `yaml:"parallelism"`
	BackoffLimit         *int32 `yaml:"backoffLimit"`
	BackoffLimitPerIndex *int32 `yaml:"backoffLimitPerIndex"`
	MaxFailedIndexes     *int32 `yaml:"maxFailedIndexes"`
	Template             struct {
		Spec k8sPodSpec `yaml:"spec"`
	} `yaml:"template"`
}

type k8sPodSpec struct {
	RestartPolicy                 string `yaml:"restartPolicy"`
	TerminationGracePeriodSeconds *int64 `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
	} `yaml:"securityContext"`
	Containers []k8sContainer `yaml:"containers"`
	Volumes    []struct {
		Name                  string `yaml:"name"`
		PersistentVolumeClaim *struct {
			ClaimName string `yaml:"claimName"`
		} `yaml:"persistentVolumeClaim"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
	} `yaml:"volumes"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	// Args are nodes, not strings, so that an unquoted number (which yaml.v3
	// would quietly decode into a string, and the API server rejects) shows.
	Args []yaml.Node `yaml:"args"`
	Env  []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		RunAsNonRoot           *bool `yaml:"runAsNonRoot"`
		ReadOnlyRootFilesystem *bool `yaml:"readOnlyRootFilesystem"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

const (
	jobNameFieldPath         = "metadata.labels['batch.kubernetes.io/job-name']"
	completionIndexFieldPath = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
)

var (
	// shardArg is the value of --shard: this pod's index, then N.
	shardArg = regexp.MustCompile(`^\$\(JOB_COMPLETION_INDEX\)/([0-9]+)$`)
	// varRef is a $(VAR) reference that Kubernetes expands in args; $$(VAR) is
	// an escaped literal.
	varRef = regexp.MustCompile(`(\$*)\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	// quantity is a Kubernetes resource quantity without an exponent.
	quantity = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$`)
)

var quantitySuffix = map[string]*big.Rat{
	"":   big.NewRat(1, 1),
	"m":  big.NewRat(1, 1000),
	"k":  new(big.Rat).SetInt64(1e3),
	"M":  new(big.Rat).SetInt64(1e6),
	"G":  new(big.Rat).SetInt64(1e9),
	"T":  new(big.Rat).SetInt64(1e12),
	"P":  new(big.Rat).SetInt64(1e15),
	"E":  new(big.Rat).SetInt64(1e18),
	"Ki": new(big.Rat).SetInt64(1 << 10),
	"Mi": new(big.Rat).SetInt64(1 << 20),
	"Gi": new(big.Rat).SetInt64(1 << 30),
	"Ti": new(big.Rat).SetInt64(1 << 40),
	"Pi": new(big.Rat).SetInt64(1 << 50),
	"Ei": new(big.Rat).SetInt64(1 << 60),
}

func parseQuantity(s string) (*big.Rat, error) {
	m := quantity.FindStringSubmatch(s)
	if m == nil {
		return nil, fmt.Errorf("cannot parse quantity %q", s)
	}
	n, ok := new(big.Rat).SetString(m[1])
	if !ok {
		return nil, fmt.Errorf("cannot parse quantity %q", s)
	}
	return n.Mul(n, quantitySuffix[m[2]]), nil
}

// checkBatchCronJob returns every way the manifest breaks the contract between
// the CronJob and `adrankctl batch run`; none means it keeps it.
func checkBatchCronJob(manifest []byte) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	var docs []*yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(manifest))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return append(problems, fmt.Sprintf("invalid YAML: %v", err))
		}
		docs = append(docs, &doc)
	}
	if len(docs) != 1 {
		return append(problems, fmt.Sprintf("got %d YAML documents, want exactly 1 (the CronJob)", len(docs)))
	}
	var cj k8sCronJob
	if err := docs[0].Decode(&cj); err != nil {
		return append(problems, fmt.Sprintf("decoding the CronJob: %v", err))
	}

	// The CronJob.
	if cj.APIVersion != "batch/v1" || cj.Kind != "CronJob" {
		bad("apiVersion/kind = %s/%s, want batch/v1/CronJob", cj.APIVersion, cj.Kind)
	}
	if cj.Metadata.Name != "adrank-batch-feed" {
		bad("metadata.name = %q, want adrank-batch-feed (README and runbooks use it)", cj.Metadata.Name)
	}
	if cj.Spec.Schedule == "" {
		bad("spec.schedule is empty")
	}
	// Two runs at once would write two generations of the same domain.
	if cj.Spec.ConcurrencyPolicy != "Forbid" {
		bad("spec.concurrencyPolicy = %q, want Forbid", cj.Spec.ConcurrencyPolicy)
	}
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"spec.startingDeadlineSeconds", cj.Spec.StartingDeadlineSeconds != nil},
		{"spec.successfulJobsHistoryLimit", cj.Spec.SuccessfulJobsHistoryLimit != nil},
		{"spec.failedJobsHistoryLimit", cj.Spec.FailedJobsHistoryLimit != nil},
	} {
		if !f.set {
			bad("%s is not set", f.name)
		}
	}

	// The Job: N indexes, each retried on its own.
	job := cj.Spec.JobTemplate.Spec
	if job.CompletionMode != "Indexed" {
		bad("jobTemplate.spec.completionMode = %q, want Indexed", job.CompletionMode)
	}
	if job.BackoffLimitPerIndex == nil && job.BackoffLimit == nil {
		bad("jobTemplate.spec sets neither backoffLimitPerIndex nor backoffLimit")
	}
	// A generation needs every index, so once one index has failed for good
	// the others are wasted work.
	if job.MaxFailedIndexes != nil && *job.MaxFailedIndexes != 0 {
		bad("jobTemplate.spec.maxFailedIndexes = %d, want 0 or unset", *job.MaxFailedIndexes)
	}

	pod := job.Template.Spec
	// Required by backoffLimitPerIndex, and a retry must be a new pod.
	if pod.RestartPolicy != "Never" {
		bad("pod restartPolicy = %q, want Never", pod.RestartPolicy)
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g <= 0 {
		bad("pod terminationGracePeriodSeconds must be set (adrankctl checkpoints on SIGTERM)")
	}
	if len(pod.Containers) != 1 {
		bad("got %d containers, want 1", len(pod.Containers))
		return problems
	}
	c := pod.Containers[0]

	if len(c.Command) != 0 && !(len(c.Command) == 1 && c.Command[0] == "/adrankctl") {
		bad("container command = %q, want unset (the image's entrypoint /adrankctl)", c.Command)
	}
	if (c.SecurityContext.RunAsNonRoot == nil || !*c.SecurityContext.RunAsNonRoot) &&
		(pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot) {
		bad("runAsNonRoot is not true")
	}
	if r := c.SecurityContext.ReadOnlyRootFilesystem; r == nil || !*r {
		bad("container readOnlyRootFilesystem is not true")
	}
	if mem, ok := c.Resources.Limits["memory"]; !ok {
		bad("container has no memory limit")
	} else if q, err := parseQuantity(mem); err != nil {
		bad("memory limit: %v", err)
	} else if maxMem := new(big.Rat).SetInt64(1 << 30); q.Sign() <= 0 || q.Cmp(maxMem) > 0 {
		bad("memory limit = %s, want > 0 and <= 1Gi", mem)
	}
	if _, ok := c.Resources.Limits["cpu"]; !ok {
		bad("container has no cpu limit")
	}

	// Args: all strings, `batch run`, each flag once.
	args := make([]string, len(c.Args))
	for i, n := range c.Args {
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
			bad("args[%d] (line %d) is %s %q, want a string: quote it", i, n.Line, n.ShortTag(), n.Value)
		}
		args[i] = n.Value
	}
	if len(args) < 2 || args[0] != "batch" || args[1] != "run" {
		bad("args = %q, want them to start with batch run", args)
	}
	flags := map[string]string{}
	for i := 2; i < len(args); i++ {
		name, value, hasValue := strings.Cut(args[i], "=")
		if !strings.HasPrefix(name, "--") {
			bad("args[%d] = %q, want a --flag", i, args[i])
			continue
		}
		if !hasValue {
			if i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
				bad("flag %s has no value", name)
				continue
			}
			i++
			value = args[i]
		}
		if _, dup := flags[name]; dup {
			bad("flag %s is given twice", name)
		}
		flags[name] = value
	}
	for _, f := range []string{"--domain", "--version", "--model", "--store", "--shard", "--generation"} {
		if flags[f] == "" {
			bad("flag %s is missing or empty", f)
		}
	}

	// --shard $(JOB_COMPLETION_INDEX)/N with N == completions == parallelism.
	if m := shardArg.FindStringSubmatch(flags["--shard"]); m == nil {
		bad("--shard = %q, want $(JOB_COMPLETION_INDEX)/N", flags["--shard"])
	} else {
		n, err := strconv.ParseInt(m[1], 10, 32)
		switch {
		case err != nil || n < 1:
			bad("--shard N = %q, want a positive integer", m[1])
		case job.Completions == nil || int64(*job.Completions) != n:
			bad("jobTemplate.spec.completions = %s, want %d, the N in --shard", ptrString(job.Completions), n)
		}
		if err == nil && (job.Parallelism == nil || int64(*job.Parallelism) != n) {
			bad("jobTemplate.spec.parallelism = %s, want %d, the N in --shard", ptrString(job.Parallelism), n)
		}
	}
	// Every index of a run must commit the same generation.
	if g := flags["--generation"]; g != "$(JOB_NAME)" {
		bad("--generation = %q, want $(JOB_NAME)", g)
	}

	// Env: the variables the args use come from the pod's Job metadata.
	env := map[string]string{}
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			bad("env %s is declared twice", e.Name)
		}
		env[e.Name] = ""
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	for _, tc := range []struct{ name, fieldPath string }{
		{"JOB_NAME", jobNameFieldPath},
		{"JOB_COMPLETION_INDEX", completionIndexFieldPath},
	} {
		if got, ok := env[tc.name]; !ok {
			bad("env %s is not declared", tc.name)
		} else if got != tc.fieldPath {
			bad("env %s comes from fieldRef %q, want %q", tc.name, got, tc.fieldPath)
		}
	}
	// Kubernetes passes an undeclared $(VAR) through literally.
	for _, a := range args {
		for _, m := range varRef.FindAllStringSubmatch(a, -1) {
			if len(m[1])%2 == 1 { // $$(VAR) is an escaped literal
				continue
			}
			if _, ok := env[m[2]]; !ok {
				bad("args use $(%s) but env does not declare it", m[2])
			}
		}
	}

	// --model lies under the mount of the adrank-models volume.
	hasVolume := false
	for _, v := range pod.Volumes {
		if v.Name == "adrank-models" {
			hasVolume = v.PersistentVolumeClaim != nil || v.ConfigMap != nil
		}
	}
	if !hasVolume {
		bad("no persistentVolumeClaim or configMap volume named adrank-models")
	}
	mounted := false
	for _, vm := range c.VolumeMounts {
		dir := strings.TrimSuffix(vm.MountPath, "/") + "/"
		if vm.Name == "adrank-models" && strings.HasPrefix(flags["--model"], dir) {
			mounted = true
		}
	}
	if !mounted {
		bad("--model %q is not under the mountPath of volume adrank-models", flags["--model"])
	}
	return problems
}

func ptrString(p *int32) string {
	if p == nil {
		return "unset"
	}
	return strconv.Itoa(int(*p))
}

func TestK8sBatchCronJobManifest(t *testing.T) {
	manifest, err := os.ReadFile(batchCronJobManifest)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range checkBatchCronJob(manifest) {
		t.Errorf("%s: %s", batchCronJobManifest, p)
	}
}

// TestK8sBatchCronJobManifestRejectsBrokenEdits makes sure that the check
// catches the edits that would break the contract. Each edit replaces text in
// the real manifest (or, with no old text, appends to it); if the manifest
// changes so that an edit no longer applies, update the edit.
func TestK8sBatchCronJobManifestRejectsBrokenEdits(t *testing.T) {
	manifest, err := os.ReadFile(batchCronJobManifest)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, old, new string
		want           string // a substring of one problem
	}{
		{"completions differs from N", "completions: 4", "completions: 3", "completions = 3, want 4"},
		{"parallelism differs from N", "parallelism: 4", "parallelism: 2", "parallelism = 2, want 4"},
		{"N differs from completions", `"$(JOB_COMPLETION_INDEX)/4"`, `"$(JOB_COMPLETION_INDEX)/8"`, "completions = 4, want 8"},
		{"shard index hard-coded", `"$(JOB_COMPLETION_INDEX)/4"`, `"0/4"`, "--shard"},
		{"not indexed", "completionMode: Indexed", "completionMode: NonIndexed", "completionMode"},
		{"generation per pod", `"$(JOB_NAME)"`, `"$(POD_NAME)"`, "--generation"},
		{"job name from wrong label", jobNameFieldPath, "metadata.labels['job-name']", "env JOB_NAME comes from"},
		{"completion index undeclared", "- name: JOB_COMPLETION_INDEX", "- name: COMPLETION_INDEX", "$(JOB_COMPLETION_INDEX)"},
		{"restart in place", "restartPolicy: Never", "restartPolicy: OnFailure", "restartPolicy"},
		{"concurrent runs", "concurrencyPolicy: Forbid", "concurrencyPolicy: Allow", "concurrencyPolicy"},
		{"memory limit too high", "limits:\n                  cpu: \"2\"\n                  memory: 1Gi", "limits:\n                  cpu: \"2\"\n                  memory: 2Gi", "memory limit"},
		{"unquoted number arg", `- "100"`, `- 100`, "want a string"},
		{"store flag dropped", "- \"--store\"\n                - \"redis://adrank-redis:6379/0\"\n", "", "--store"},
		{"writable root", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem"},
		{"model outside the mount", `"/models/feed/v2.json"`, `"/data/feed/v2.json"`, "--model"},
		{"second document", "", "---\napiVersion: batch/v1\nkind: Job\n", "documents"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broken := string(manifest) + tc.new
			if tc.old != "" {
				if !strings.Contains(string(manifest), tc.old) {
					t.Fatalf("the manifest no longer contains %q: update this edit", tc.old)
				}
				broken = strings.Replace(string(manifest), tc.old, tc.new, 1)
			}
			problems := checkBatchCronJob([]byte(broken))
			for _, p := range problems {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Errorf("no problem mentions %q; got %q", tc.want, problems)
		})
	}
}

func TestK8sParseQuantity(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64 // bytes; -1 for a parse error
	}{
		{"1Gi", 1 << 30},
		{"1024Mi", 1 << 30},
		{"512Mi", 512 << 20},
		{"1.5Gi", 3 << 29},
		{"1G", 1e9},
		{"900M", 9e8},
		{"1073741824", 1 << 30},
		{"1000m", 1},
		{"1e9", -1},
		{"1 Gi", -1},
		{"", -1},
	} {
		q, err := parseQuantity(tc.in)
		switch {
		case tc.want < 0 && err == nil:
			t.Errorf("parseQuantity(%q) = %v, want an error", tc.in, q)
		case tc.want >= 0 && err != nil:
			t.Errorf("parseQuantity(%q): %v", tc.in, err)
		case tc.want >= 0 && q.Cmp(new(big.Rat).SetInt64(tc.want)) != 0:
			t.Errorf("parseQuantity(%q) = %v, want %d", tc.in, q, tc.want)
		}
	}
}
