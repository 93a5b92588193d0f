// gorender renders Go text/template templates the way LocalAI does, for modelyard's
// differential tests: the translated Jinja2 must produce exactly this output.
//
// Input (stdin): a JSON list of {"template": string, "data": object}.
// Output (stdout): a JSON list of {"output": string} or {"error": string}, in the same order.
//
// LocalAI renders with sprig's functions plus its own; the templates in its gallery use
// toJson (sprig: json.Marshal) and add1, which are provided here with sprig's semantics.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"text/template"
)

type renderCase struct {
	Template string                 `json:"template"`
	Data     map[string]interface{} `json:"data"`
}

type renderResult struct {
	Output *string `json:"output,omitempty"`
	Error  *string `json:"error,omitempty"`
}

func toJSON(v interface{}) string {
	out, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(out)
}

func add1(v interface{}) int64 {
	switch n := v.(type) {
	case float64:
		return int64(n) + 1
	case int:
		return int64(n) + 1
	case int64:
		return n + 1
	}
	return 1
}

func render(c renderCase) renderResult {
	funcs := template.FuncMap{"toJson": toJSON, "add1": add1}
	tmpl, err := template.New("t").Funcs(funcs).Parse(c.Template)
	if err != nil {
		msg := err.Error()
		return renderResult{Error: &msg}
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, c.Data); err != nil {
		msg := err.Error()
		return renderResult{Error: &msg}
	}
	out := buf.String()
	return renderResult{Output: &out}
}

func main() {
	var cases []renderCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		fmt.Fprintln(os.Stderr, "gorender: bad input:", err)
		os.Exit(2)
	}
	results := make([]renderResult, len(cases))
	for i, c := range cases {
		results[i] = render(c)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(results); err != nil {
		os.Exit(1)
	}
}
