/**
 * The framing of a qemu-guest-agent channel, for tests that stand in for the
 * agent on a unix socket: JSON lines, a 0xFF that resets the parser, and
 * guest-sync-delimited answered with 0xFF and the caller's id. Every other
 * command goes to `respond`, with helpers to answer it.
 */
import { createServer, type Server, type Socket } from 'node:net';

export type AgentCmd = { execute: string; arguments?: Record<string, unknown>; id?: string };

export interface AgentReply {
  /** {"return": value} with the command's id. */
  ok: (value: unknown) => void;
  /** {"error": {"class": "GenericError", "desc": desc}} with the command's id. */
  error: (desc: string) => void;
  sock: Socket;
}

export interface FakeAgentChannelOptions {
  /** Called for each connection before anything is read (e.g. to write stale bytes). */
  onConnect?: (sock: Socket) => void;
  /** Answer a 0xFF as qemu-ga does: a JSON parse error reply (default: silently). */
  parseErrorOnDelimiter?: boolean;
  /** Every accepted socket goes here (the test destroys them). */
  sockets?: Socket[];
}

/** Listens on `path` as an agent channel; resolves once listening. */
export function serveAgentChannel(path: string, respond: (cmd: AgentCmd, reply: AgentReply) => void, opts: FakeAgentChannelOptions = {}): Promise<Server> {
  const server = createServer((sock) => {
    opts.sockets?.push(sock);
    sock.on('error', () => undefined);
    opts.onConnect?.(sock);
    let buf = Buffer.alloc(0);
    sock.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      for (;;) {
        const ff = buf.indexOf(0xff);
        const nl = buf.indexOf(0x0a);
        if (ff >= 0 && (nl < 0 || ff < nl)) {
          if (opts.parseErrorOnDelimiter) sock.write('{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\uFFFD\'"}}\n');
          buf = buf.subarray(ff + 1);
          continue;
        }
        if (nl < 0) break;
        const cmd = JSON.parse(buf.subarray(0, nl).toString()) as AgentCmd;
        buf = buf.subarray(nl + 1);
        if (cmd.execute === 'guest-sync-delimited') {
          sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(JSON.stringify({ return: cmd.arguments!.id }) + '\n')]));
          continue;
        }
        respond(cmd, {
          ok: (value) => sock.write(JSON.stringify({ return: value, id: cmd.id }) + '\n'),
          error: (desc) => sock.write(JSON.stringify({ error: { class: 'GenericError', desc }, id: cmd.id }) + '\n'),
          sock,
        });
      }
    });
  });
  return new Promise((resolve) => server.listen(path, () => resolve(server)));
}
