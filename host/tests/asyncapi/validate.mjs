// Reads an AsyncAPI document from the file named by the first argument, parses and validates it
// with @asyncapi/parser, and prints a JSON summary: the diagnostics of severity error or warning,
// and, per channel, its message's name, its payload's property names, and who sends and
// receives it. Exits 1 when the document is invalid.
import { readFileSync } from 'node:fs';
import { Parser } from '@asyncapi/parser';

const text = readFileSync(process.argv[2], 'utf8');
const parser = new Parser();
const { document, diagnostics } = await parser.parse(text);
// Severity 0 is an error, 1 a warning.
const problems = diagnostics
  .filter((d) => d.severity <= 1)
  .map((d) => ({ severity: d.severity, code: d.code, message: d.message, path: d.path.join('/') }));
const channels = {};
if (document) {
  for (const channel of document.channels()) {
    const message = channel.messages().all()[0];
    const payload = message?.payload();
    channels[channel.address()] = {
      message: message?.name(),
      properties: payload ? Object.keys(payload.properties() ?? {}) : [],
      required: payload?.required() ?? [],
      send: channel.operations().filterBySend().map((o) => o.tags().all()[0]?.name()),
      receive: channel.operations().filterByReceive().map((o) => o.tags().all()[0]?.name()),
    };
  }
}
console.log(JSON.stringify({ valid: document !== undefined, version: document?.version(), problems, channels }));
process.exit(document ? 0 : 1);
