export { ControlServer, type ControlServerOptions } from './server';
export { ControlClient, controlRequest, resolveControlSocket, DEFAULT_CONTROL_TIMEOUT_MS, type ControlClientOptions } from './client';
export { ControlError, ControlSocketInUseError, GatewayNotReadyError, GATEWAY_NOT_READY } from './errors';
export {
  CONTROL_ERROR_CODES,
  CONTROL_METHODS,
  CONTROL_PROTOCOL_VERSION,
  flowgateVersion,
  type ControlMethod,
  type ControlRequest,
  type ControlResponse,
  type ControlResults,
  type PingResult,
  type VersionResult,
} from './protocol';
