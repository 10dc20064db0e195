package wire_test

import (
	"encoding/json"
	"errors"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/danielgtaylor/huma/v2"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// TestProblemMatchesServer: a problem as the server writes it (httpapi.Problem, every
// field set) decodes into wire.Problem and encodes back to the same JSON, so a client
// loses no field of it.
func TestProblemMatchesServer(t *testing.T) {
	server := &httpapi.Problem{Type: "about:blank", Title: "Bad Request", Status: 400, Detail: "d", Code: "invalid_input",
		Field: "allowlist", Value: "10.0.0.0/33", Errors: []*huma.ErrorDetail{{Message: "m", Location: "body.allowlist[0]", Value: "x"}},
		RetryIn: 3, Holder: "I1", CurrentVersion: 7, Limit: 10, AppliedSeq: 12}
	// Every exported field is set, so a field added to one side and not the other shows.
	v := reflect.ValueOf(server).Elem()
	for i := range v.NumField() {
		if f := v.Type().Field(i); f.IsExported() && v.Field(i).IsZero() {
			t.Fatalf("set httpapi.Problem.%s in this test", f.Name)
		}
	}
	want, err := json.Marshal(server)
	if err != nil {
		t.Fatal(err)
	}
	var client wire.Problem
	if err := json.Unmarshal(want, &client); err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(client)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("the client reads a problem as\n%s\nthe server wrote\n%s", got, want)
	}
}

// TestDependencies: wire links nothing but the standard library.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v: %s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	if deps := strings.Fields(string(out)); len(deps) != 1 || deps[0] != "github.com/keyreg/keyreg/cmd/keyreg/wire" {
		t.Errorf("wire depends on %v", deps)
	}
}
