// A tiny OpenAI-compatible chat endpoint over a local GGUF model (node-llama-cpp),
// so the agent talks HTTP to a real model in tests.
//   node llm_shim.mjs MODEL.gguf PORT
// POST /v1/chat/completions {messages, tools?}: when tools are offered and the last
// message is not a tool result, the model's output is constrained by a JSON grammar
// to {"tool": <one of the tool names>} and returned as a tool call (arguments {}):
// small models cannot be trusted to write free-form call syntax. Otherwise the
// model writes the answer text. GET /v1/models lists the model. One request at a time.
import http from "node:http";
import path from "node:path";
import {getLlama, LlamaChatSession} from "node-llama-cpp";

const [, , modelPath, portText] = process.argv;
const port = Number(portText);
const llama = await getLlama({gpu: false, build: "never"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize: 2048, threads: Number(process.env.SHIM_THREADS || 1)});
const modelName = path.basename(modelPath);
let queue = Promise.resolve();

function clip(text, n) {
  text = String(text ?? "");
  return text.length > n ? text.slice(0, n) + " ..." : text;
}

function render(messages) {
  const parts = [];
  for (const m of messages) {
    if (m.role === "system") continue;
    if (m.role === "tool") parts.push(`Tool ${m.name} returned: ${clip(m.content, 900)}`);
    else if (m.role === "assistant" && m.tool_calls) parts.push(`(called ${m.tool_calls.map(t => t.function.name).join(", ")})`);
    else parts.push(`${m.role}: ${clip(m.content, 900)}`);
  }
  return parts.join("\n");
}

async function complete(body) {
  const messages = body.messages || [];
  const tools = (body.tools || []).map(t => t.function.name);
  const system = (messages.find(m => m.role === "system") || {}).content || "";
  const last = messages[messages.length - 1] || {};
  const seq = context.getSequence();
  try {
    const session = new LlamaChatSession({contextSequence: seq, systemPrompt: system});
    const maxTokens = Math.min(Number(body.max_tokens || 128), 256);
    if (tools.length && last.role !== "tool") {
      const grammar = await llama.createGrammarForJsonSchema({
        type: "object", properties: {tool: {enum: tools}}});
      const text = await session.prompt(render(messages) + "\nPick the tool to call.", {grammar, maxTokens: 32, temperature: 0});
      const pick = grammar.parse(text);
      return {role: "assistant", content: "", tool_calls: [{id: "call_0", type: "function",
        function: {name: pick.tool, arguments: "{}"}}]};
    }
    const text = await session.prompt(render(messages) + "\nAnswer:", {maxTokens, temperature: 0});
    return {role: "assistant", content: text};
  } finally {
    seq.dispose();
  }
}

const server = http.createServer((req, res) => {
  const send = (code, obj) => {
    res.writeHead(code, {"Content-Type": "application/json"});
    res.end(JSON.stringify(obj));
  };
  if (req.method === "GET" && req.url === "/v1/models") return send(200, {data: [{id: modelName, object: "model"}]});
  if (req.method !== "POST" || req.url !== "/v1/chat/completions") return send(404, {error: {message: "not found"}});
  let data = "";
  req.on("data", c => { data += c; if (data.length > 4e6) req.destroy(); });
  req.on("end", () => {
    queue = queue.then(async () => {
      try {
        const message = await complete(JSON.parse(data));
        send(200, {id: "chatcmpl-shim", object: "chat.completion", model: modelName,
          choices: [{index: 0, message, finish_reason: message.tool_calls ? "tool_calls" : "stop"}]});
      } catch (e) {
        send(400, {error: {message: String(e && e.message || e)}});
      }
    });
  });
});
server.listen(port, "127.0.0.1", () => console.log(`ready ${port}`));
process.on("SIGTERM", () => { server.close(); process.exit(0); });
