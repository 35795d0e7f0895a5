/**
 * The deadline of the gRPC call being served, carried through the async work of the call (AsyncLocalStorage), so
 * the layers below the handler (storage) stop waiting once the caller has stopped waiting (grpc-js ends the call
 * with DEADLINE_EXCEEDED at the deadline, whatever the handler is still doing).
 */
import { AsyncLocalStorage } from "node:async_hooks";

const store = new AsyncLocalStorage<number>();

/**
 * Runs `fn` with `deadline` (epoch ms; Infinity for a call without one) as the current call's deadline.
 * @returns what `fn` returns.
 */
export function withCallDeadline<T>(deadline: number, fn: () => T): T {
  return store.run(deadline, fn);
}

/** Milliseconds left before the current call's deadline (may be <= 0); Infinity outside a call or without one. */
export function msUntilCallDeadline(now = Date.now()): number {
  const deadline = store.getStore();
  return deadline === undefined ? Infinity : deadline - now;
}
