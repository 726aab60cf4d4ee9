// Answer one question with a GGUF in llama.cpp (through node-llama-cpp's prebuilt binaries),
// using the chat template the GGUF carries. Prints {"answer": ...} as JSON.
// Usage: node llama_chat.mjs MODEL.gguf SYSTEM QUESTION
import {getLlama, LlamaChatSession} from "node-llama-cpp";

const [, , modelPath, system, question] = process.argv;
const llama = await getLlama({gpu: false, build: "never"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize: 512, threads: 1});
const session = new LlamaChatSession({
  contextSequence: context.getSequence(),
  systemPrompt: system || undefined,
});
const answer = await session.prompt(question, {maxTokens: 32, temperature: 0});
console.log(JSON.stringify({answer, llama_cpp: llama.llamaCppRelease?.release ?? null}));
