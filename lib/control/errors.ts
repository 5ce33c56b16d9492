import { FlowgateError } from '../errors';
import { CONTROL_ERROR_CODES } from './protocol';

/**
 * A control socket failure on either side. Errors answered by the serving instance keep
 * the code it sent (ERR_FLOWGATE_CONTROL_UNKNOWN_METHOD, or a gateway's own code).
 */
export class ControlError extends FlowgateError {}

/** Starting a server on a socket that another live flowgate serves. */
export class ControlSocketInUseError extends ControlError {
  /** The serving process, when it said (null: it accepted the connection but did not answer). */
  readonly pid: number | null;

  constructor(socketPath: string, pid: number | null) {
    super(
      CONTROL_ERROR_CODES.inUse,
      `control socket ${socketPath} is served by another flowgate (${pid === null ? 'pid unknown: it did not answer' : `pid ${pid}`}); ` +
        'stop that instance first, or give this one another control.socket',
    );
    this.pid = pid;
  }
}

export const GATEWAY_NOT_READY = 'ERR_FLOWGATE_NOT_READY';

/**
 * What the control socket and /metrics answer while the instance is still starting: the
 * socket is claimed first (it is the instance lock), the gateway comes up after.
 */
export class GatewayNotReadyError extends FlowgateError {
  constructor() {
    super(GATEWAY_NOT_READY, 'flowgate is starting: the gateway is not up yet');
  }
}
