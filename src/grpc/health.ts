/**
 * The gRPC health service (grpc.health.v1) as grpc-health-check implements it, with two changes: a Watch stream
 * hears only changes of status (the library repeats an unchanged status to every watcher at every set), and a
 * service name nobody watches any more is forgotten (the library keeps an empty watcher set per name ever watched,
 * so a caller cycling through made-up names, unauthenticated on an open health port, grows the server without
 * bound).
 */
import { HealthImplementation, type ServingStatus } from "grpc-health-check";

type Watcher = (status: ServingStatus) => void;

/** The library's private members, which this subclass has to reach. */
interface HealthInternals {
  statusMap: Map<string, ServingStatus>;
  watchers: Map<string, Set<Watcher>>;
  removeWatcher(service: string, watcher: Watcher): void;
}

/** HealthImplementation whose watchers hear changes only and whose watcher sets do not outlive their watchers. */
export class ServingHealth extends HealthImplementation {
  constructor(initial: Record<string, ServingStatus>) {
    super(initial);
    // removeWatcher is private in the library's types; the library calls it through `this`, so an own property
    // takes its place.
    const internals = this as unknown as HealthInternals;
    const remove = internals.removeWatcher.bind(this);
    internals.removeWatcher = (service, watcher) => {
      remove(service, watcher);
      if (internals.watchers.get(service)?.size === 0) internals.watchers.delete(service);
    };
  }

  /** Sets `service`'s status; watchers are told only when it differs from the current one. */
  override setStatus(service: string, status: ServingStatus): void {
    if ((this as unknown as HealthInternals).statusMap.get(service) === status) return;
    super.setStatus(service, status);
  }

  /** How many service names have watchers now (tests). */
  watchedNames(): number {
    return (this as unknown as HealthInternals).watchers.size;
  }
}
