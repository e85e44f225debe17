/**
 * The guest channels the daemon's lifecycle uses (readiness and the stop
 * chain): the guest agent (src/guest/agent.ts) and SSH (src/guest/ssh.ts).
 * They are the guest's, not the VMM's: a driver only says where the agent
 * channel ends on the host (`VmmDriver.agentSocket`). One object so the
 * lifecycle tests can hand VmService fakes.
 */
import { connectAgent, waitForAgent, type GuestAgent, type WaitForAgentOptions } from '../guest/agent.js';
import { sshExec, waitForSsh, type SshExecIo, type SshExecResult, type WaitForSshOptions } from '../guest/ssh.js';
import { waitForSshd, type SshdReadiness } from '../guest/sshd-ready.js';
import type { SshTarget } from '../model/types.js';

/** What the stop chain does with a connected agent. */
export type AgentSession = Pick<GuestAgent, 'sync' | 'shutdown' | 'exec' | 'close'>;

export interface GuestOps {
  /** Resolves once the agent on socketPath answers a ping. */
  waitForAgent(socketPath: string, deadlineMs: number, signal?: AbortSignal): Promise<void>;
  waitForSsh(target: SshTarget, opts: WaitForSshOptions): Promise<void>;
  /** Through the agent: sshd listens after the guest unit succeeded, and the host key it serves (sshd-ready.ts). */
  waitForSshd(socketPath: string, opts: WaitForAgentOptions): Promise<SshdReadiness>;
  connectAgent(socketPath: string, opts: WaitForAgentOptions): Promise<AgentSession>;
  sshExec(target: SshTarget, command: string, io: SshExecIo): Promise<SshExecResult>;
}

export const realGuestOps: GuestOps = { waitForAgent, waitForSsh, waitForSshd, connectAgent, sshExec };
