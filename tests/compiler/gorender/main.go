// gorender renders Go text/template templates the way LocalAI does, for modelyard's
// differential tests: the translated Jinja2 must produce exactly this output.
//
// Input (stdin): a JSON list of {"template": string, "data": object}, or of {"localai":
// {"config": object, "request": object}}: a chat request made into a prompt as LocalAI does
// it (localai_prompt.go).
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
	LocalAI  *localaiCase           `json:"localai"`
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

func templateFuncs() template.FuncMap {
	return template.FuncMap{"toJson": toJSON, "add1": add1}
}

// executeTemplate renders as LocalAI does: core/templates/cache.go parses with sprig's functions.
func executeTemplate(text string, data any) (string, error) {
	tmpl, err := template.New("prompt").Funcs(templateFuncs()).Parse(text)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, data); err != nil {
		return "", err
	}
	return buf.String(), nil
}

func render(c renderCase) renderResult {
	var out string
	var err error
	if c.LocalAI != nil {
		out, err = c.LocalAI.prompt()
	} else {
		out, err = executeTemplate(c.Template, c.Data)
	}
	if err != nil {
		msg := err.Error()
		return renderResult{Error: &msg}
	}
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
