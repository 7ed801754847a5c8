// Command kstatus reads one Kubernetes object as JSON on standard input and
// prints the status that kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status)
// computes for it, as one JSON line on standard output:
//
//	{"status":"Current","message":"Resource is Ready","conditions":[]}
//
// Flux's health checks and cli-utils' apply waiters judge custom resources
// with this function, so the e2e tests run this command on real trackers to
// show how those tools see a MessageTracker. It exits with status 1 when the
// input is not a Kubernetes object or kstatus returns an error.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// output is the printed result; the field names are this command's own.
type output struct {
	Status     status.Status      `json:"status"`
	Message    string             `json:"message"`
	Conditions []status.Condition `json:"conditions"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	data, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("reading standard input failed: %w", err)
	}
	// The unstructured decoder keeps integers such as metadata.generation as
	// int64, as the API machinery does for objects read from a cluster. It
	// rejects input without apiVersion and kind.
	object := &unstructured.Unstructured{}
	if err := object.UnmarshalJSON(data); err != nil {
		return fmt.Errorf("standard input is not a Kubernetes object as JSON: %w", err)
	}

	result, err := status.Compute(object)
	if err != nil {
		return fmt.Errorf("computing the status of %s %s/%s failed: %w",
			object.GetKind(), object.GetNamespace(), object.GetName(), err)
	}
	conditions := result.Conditions
	if conditions == nil {
		conditions = []status.Condition{}
	}
	return json.NewEncoder(out).Encode(output{Status: result.Status, Message: result.Message, Conditions: conditions})
}
