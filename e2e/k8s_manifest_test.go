package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// batchCronJobManifest is the Kubernetes manifest that runs `adrankctl batch
// run` as a daily Indexed Job (see deploy/k8s/README.md).
var batchCronJobManifest = filepath.Join("..", "deploy", "k8s", "batch", "batch-cronjob.yaml")

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
	// maxBatchMemory is the most memory the batch container may be given.
	maxBatchMemory = resource.MustParse("1Gi")
)

// decodeBatchCronJob strictly decodes the manifest, which must hold exactly one
// YAML document, into the real Kubernetes type. A misspelled or misplaced
// field, a duplicate key or a value of the wrong type is an error here, where
// hand-written structs would silently drop it and the cluster would reject or
// ignore it.
func decodeBatchCronJob(manifest []byte) (*batchv1.CronJob, error) {
	// Split the stream the way kubectl does; a document of only comments (or
	// nothing) is skipped, as kubectl skips it.
	var docs [][]byte
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifest)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("invalid YAML: %w", err)
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("invalid YAML: %w", err)
		}
		if string(bytes.TrimSpace(j)) != "null" {
			docs = append(docs, doc)
		}
	}
	if len(docs) != 1 {
		return nil, fmt.Errorf("got %d YAML documents, want exactly 1 (the CronJob)", len(docs))
	}

	var cj batchv1.CronJob
	if err := decodeStrict(docs[0], &cj); err != nil {
		return nil, fmt.Errorf("decoding the CronJob: %w", err)
	}
	return &cj, nil
}

// decodeStrict decodes one YAML document into a Kubernetes type, refusing
// unknown fields, duplicate keys and values of the wrong type.
func decodeStrict(doc []byte, into any) error {
	if err := yaml.UnmarshalStrict(doc, into); err != nil {
		return err
	}
	// sigs.k8s.io/yaml converts each YAML value to the type of the field it
	// goes into (an unquoted 100 or yes in args becomes the string "100" or
	// "true"), and encoding/json matches field names case-insensitively
	// (CompletionMode: is taken for completionMode:). kubectl converts the YAML
	// to JSON without such type hints, and the API server decodes that JSON
	// case-sensitively, so it would reject both: decode that JSON the same way.
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	fresh := reflect.New(reflect.TypeOf(into).Elem()).Interface()
	strictErrs, err := sigsjson.UnmarshalStrict(j, fresh)
	if err == nil {
		err = errors.Join(strictErrs...)
	}
	if err != nil {
		return fmt.Errorf("as the API server decodes it: %w", err)
	}
	return nil
}

// checkBatchCronJob returns every way the manifest breaks the contract between
// the CronJob and `adrankctl batch run`; none means it keeps it.
func checkBatchCronJob(manifest []byte) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	cj, err := decodeBatchCronJob(manifest)
	if err != nil {
		return []string{err.Error()}
	}

	// The CronJob.
	if cj.APIVersion != "batch/v1" || cj.Kind != "CronJob" {
		bad("apiVersion/kind = %s/%s, want batch/v1/CronJob", cj.APIVersion, cj.Kind)
	}
	if cj.Name != "adrank-batch-feed" {
		bad("metadata.name = %q, want adrank-batch-feed (README and runbooks use it)", cj.Name)
	}
	if cj.Spec.Schedule == "" {
		bad("spec.schedule is empty")
	}
	// Two runs at once would write two generations of the same domain.
	if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
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
	if job.CompletionMode == nil || *job.CompletionMode != batchv1.IndexedCompletion {
		bad("jobTemplate.spec.completionMode = %s, want Indexed", ptrString(job.CompletionMode))
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
	if pod.RestartPolicy != corev1.RestartPolicyNever {
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
	podNonRoot := pod.SecurityContext != nil && pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot
	var containerNonRoot, readOnlyRoot bool
	if sc := c.SecurityContext; sc != nil {
		containerNonRoot = sc.RunAsNonRoot != nil && *sc.RunAsNonRoot
		readOnlyRoot = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
	}
	if !podNonRoot && !containerNonRoot {
		bad("runAsNonRoot is not true")
	}
	if !readOnlyRoot {
		bad("container readOnlyRootFilesystem is not true")
	}
	if mem, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		bad("container has no memory limit")
	} else if mem.Sign() <= 0 || mem.Cmp(maxBatchMemory) > 0 {
		bad("memory limit = %s, want > 0 and <= %s", mem.String(), maxBatchMemory.String())
	}
	if _, ok := c.Resources.Limits[corev1.ResourceCPU]; !ok {
		bad("container has no cpu limit")
	}

	// Args: `batch run`, then each flag once. (That they are all strings is
	// checked by decodeBatchCronJob.)
	args := c.Args
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

// ptrString formats an optional field of the manifest.
func ptrString[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
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
		{"memory limit over 1Gi in decimal units", "limits:\n                  cpu: \"2\"\n                  memory: 1Gi", "limits:\n                  cpu: \"2\"\n                  memory: 1100M", "memory limit"},
		{"memory limit not a quantity", "limits:\n                  cpu: \"2\"\n                  memory: 1Gi", "limits:\n                  cpu: \"2\"\n                  memory: 1 Gi", "decoding the CronJob"},
		{"no cpu limit", "limits:\n                  cpu: \"2\"\n", "limits:\n", "no cpu limit"},
		// kubectl sends 100 as a number, which the API server will not take for a string.
		{"unquoted number arg", `- "100"`, `- 100`, "cannot unmarshal number"},
		{"store flag dropped", "- \"--store\"\n                - \"redis://adrank-redis:6379/0\"\n", "", "--store"},
		{"writable root", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem"},
		{"model outside the mount", `"/models/feed/v2.json"`, `"/data/feed/v2.json"`, "--model"},
		{"second document", "", "---\napiVersion: batch/v1\nkind: Job\n", "documents"},
		// Fields that hand-written structs would silently drop, and the API
		// server would reject (kubectl validates fields strictly by default).
		{"misspelled field", "completionMode: Indexed", "completionMod: Indexed", `unknown field "completionMod"`},
		{"misspelled retry limit", "backoffLimitPerIndex: 3", "backofLimitPerIndex: 3", `unknown field "backofLimitPerIndex"`},
		{"field name in the wrong case", "completionMode: Indexed", "CompletionMode: Indexed", `unknown field "spec.jobTemplate.spec.CompletionMode"`},
		{"unknown field in the container", "image: adrank/adrankctl:latest\n", "image: adrank/adrankctl:latest\n              readOnlyRootFilesystem: true\n", `unknown field "readOnlyRootFilesystem"`},
		{"duplicate key", "concurrencyPolicy: Forbid\n", "concurrencyPolicy: Forbid\n  concurrencyPolicy: Allow\n", `"concurrencyPolicy" already set`},
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
