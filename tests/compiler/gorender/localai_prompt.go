// A chat request made into a prompt the way LocalAI does it, written from LocalAI's source
// (mudler/LocalAI, read at commit 82c191a) for modelyard's differential test of its template
// data: which messages become which `.RoleName`/`.Content`/`.FunctionCall`, what `.Functions`
// holds, when `.Function` is true, where the YAML's `system_prompt` goes.
//
//   - the request's decoding: core/http/middleware/request.go (content -> StringContent l.452,
//     tools -> Functions l.386, tool_choice -> the function-call mode l.392-440)
//   - the tool grammar and the no-action function: core/http/endpoints/openai/chat.go l.164-383
//   - the messages and the prompt: core/templates/evaluator.go TemplateMessages
//
// Only what reaches a prompt is kept; grammars themselves are not built (chat.go sets
// config.Grammar whenever it builds one, and only whether it is set reaches the template).
package main

import (
	"encoding/json"
	"fmt"
	"strings"
)

// The model YAML's keys that shape a prompt (core/config/model_config.go).
type localaiConfig struct {
	Templates struct {
		Chat        string  `json:"chat"`
		ChatMessage string  `json:"chat_message"`
		Functions   string  `json:"function"`
		JoinBy      *string `json:"join_chat_messages_by_character"`
	} `json:"template"`
	Roles               map[string]string `json:"roles"`
	SystemPrompt        string            `json:"system_prompt"`
	NoGrammar           bool              `json:"no_grammar"` // function.grammar.disable
	DisableNoAction     bool              `json:"disable_no_action"`
	NoActionName        string            `json:"no_action_function_name"`
	NoActionDescription string            `json:"no_action_description_name"`
	// LocalAI bugs modelyard does not copy, each fixed here where the test asks (it says why).
	Fixes struct {
		RequiredWithoutNoAction bool `json:"required_without_no_action"`
	} `json:"fixes"`
}

// core/schema: FunctionCall, ToolCall, Message; pkg/functions: Function, Tool.
type functionCall struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

type toolCall struct {
	Index        int          `json:"index"`
	ID           string       `json:"id"`
	Type         string       `json:"type"`
	FunctionCall functionCall `json:"function"`
}

type function struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Strict      bool           `json:"strict"`
	Parameters  map[string]any `json:"parameters"`
}

type message struct {
	Role          string     `json:"role"`
	Name          string     `json:"name"`
	Content       any        `json:"content"`
	FunctionCall  any        `json:"function_call"`
	ToolCalls     []toolCall `json:"tool_calls"`
	stringContent string
}

type chatRequest struct {
	Messages []message `json:"messages"`
	Tools    []struct {
		Type     string   `json:"type"`
		Function function `json:"function"`
	} `json:"tools"`
	Functions       []function `json:"functions"`
	ToolChoice      any        `json:"tool_choice"`
	ReasoningEffort string     `json:"reasoning_effort"`
}

// The data templates see (core/templates/evaluator.go).
type promptTemplateData struct {
	SystemPrompt         string
	SuppressSystemPrompt bool
	Input                string
	Instruction          string
	Functions            []function
	MessageIndex         int
	ReasoningEffort      string
	Metadata             map[string]string
}

type chatMessageTemplateData struct {
	SystemPrompt string
	Role         string
	RoleName     string
	FunctionName string
	Content      string
	MessageIndex int
	Function     bool
	FunctionCall any
	LastMessage  bool
}

type localaiCase struct {
	Config  localaiConfig `json:"config"`
	Request chatRequest   `json:"request"`
}

// decode: what request.go makes of the messages and tool_choice.
func (c *localaiCase) decode() (callMode string, callName string) {
	for i, m := range c.Request.Messages {
		switch content := m.Content.(type) {
		case string:
			c.Request.Messages[i].stringContent = content
		case []any: // text parts concatenated (request.go l.460); no media in these cases
			text := ""
			for _, part := range content {
				if p, ok := part.(map[string]any); ok && p["type"] == "text" {
					text += fmt.Sprint(p["text"])
				}
			}
			c.Request.Messages[i].stringContent = text
		}
	}
	switch choice := c.Request.ToolChoice.(type) {
	case string:
		callMode = choice // "auto" needs nothing; "none" and "required" set the mode
	case map[string]any:
		if fn, ok := choice["function"].(map[string]any); ok {
			callName = fmt.Sprint(fn["name"])
		}
	}
	return callMode, callName
}

func (c *localaiCase) prompt() (string, error) {
	callMode, callName := c.decode()
	var funcs []function
	for _, tool := range c.Request.Tools { // request.go l.386
		funcs = append(funcs, tool.Function)
	}
	funcs = append(funcs, c.Request.Functions...)
	// model_config.go ShouldUseFunctions
	shouldUseFn := len(funcs) > 0 && (callMode != "none" || callName != "")
	grammar := false
	if !c.Config.NoGrammar && shouldUseFn { // chat.go l.327
		name, description := "answer", "use this action to answer without performing any action"
		if c.Config.NoActionName != "" {
			name = c.Config.NoActionName
		}
		if c.Config.NoActionDescription != "" {
			description = c.Config.NoActionDescription
		}
		if !c.Config.DisableNoAction && !(c.Config.Fixes.RequiredWithoutNoAction && callMode == "required") {
			funcs = append(funcs, function{Name: name, Description: description, Parameters: map[string]any{
				"properties": map[string]any{"message": map[string]any{
					"type": "string", "description": "The message to reply the user with"}}}})
		}
		grammar = true
	}
	if callName != "" { // funcs.Select
		var selected []function
		for _, f := range funcs {
			if f.Name == callName {
				selected = append(selected, f)
			}
		}
		funcs = selected
	}
	return c.templateMessages(funcs, shouldUseFn, grammar)
}

// templateMessages: evaluator.go TemplateMessages, step for step.
func (c *localaiCase) templateMessages(funcs []function, shouldUseFn, grammar bool) (string, error) {
	config := c.Config
	messages := c.Request.Messages
	suppressConfigSystemPrompt := false
	mess := []string{}
	for messageIndex, i := range messages {
		var content string
		role := i.Role
		if (i.FunctionCall != nil || i.ToolCalls != nil) && i.Role == "assistant" {
			if config.Roles["assistant_function_call"] != "" {
				role = "assistant_function_call"
			}
		}
		r := config.Roles[role]
		contentExists := i.stringContent != ""
		fcall := i.FunctionCall
		if len(i.ToolCalls) > 0 {
			fcall = i.ToolCalls
		}
		if config.Templates.ChatMessage != "" {
			templated, err := executeTemplate(config.Templates.ChatMessage, chatMessageTemplateData{
				SystemPrompt: config.SystemPrompt,
				Role:         r,
				RoleName:     role,
				Content:      i.stringContent,
				FunctionCall: fcall,
				FunctionName: i.Name,
				LastMessage:  messageIndex == len(messages)-1,
				Function:     grammar && messageIndex == len(messages)-1,
				MessageIndex: messageIndex,
			})
			if err == nil { // on an error, LocalAI logs it and goes on with the role-prefix text below
				if templated == "" {
					continue
				}
				content = templated
			}
		}
		marshal := func(f any, prefix string) {
			j, err := json.Marshal(f)
			if err == nil {
				if contentExists {
					content += "\n" + prefix + string(j)
				} else {
					content = prefix + string(j)
				}
			}
		}
		if content == "" {
			prefix := ""
			if r != "" {
				prefix = r + " "
				if contentExists {
					content = fmt.Sprint(r, i.stringContent)
				}
			} else if contentExists {
				content = i.stringContent
			}
			if i.FunctionCall != nil {
				marshal(i.FunctionCall, prefix)
			}
			if i.ToolCalls != nil {
				marshal(i.ToolCalls, prefix)
			}
			if contentExists && role == "system" {
				suppressConfigSystemPrompt = true
			}
		}
		mess = append(mess, content)
	}
	joinCharacter := "\n"
	if config.Templates.JoinBy != nil {
		joinCharacter = *config.Templates.JoinBy
	}
	predInput := strings.Join(mess, joinCharacter)
	templateText := config.Templates.Chat
	if config.Templates.Functions != "" && shouldUseFn {
		templateText = config.Templates.Functions
	}
	if templateText == "" {
		return predInput, nil
	}
	templated, err := executeTemplate(templateText, promptTemplateData{
		SystemPrompt:         config.SystemPrompt,
		SuppressSystemPrompt: suppressConfigSystemPrompt,
		Input:                predInput,
		Functions:            funcs,
		ReasoningEffort:      c.Request.ReasoningEffort,
	})
	if err != nil { // LocalAI logs it and sends the messages joined
		return predInput, nil
	}
	return templated, nil
}
