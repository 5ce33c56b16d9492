export { ControlServer, type ControlServerOptions } from './server';
export { ControlClient, controlRequest, controlStream, resolveControlSocket, DEFAULT_CONTROL_TIMEOUT_MS, type ControlClientOptions, type RecordConsumer } from './client';
export { parseFlowQuery, FLOW_FILTERS, type FlowQuery } from './flow-query';
export { ControlError, ControlSocketInUseError, GatewayNotReadyError, GATEWAY_NOT_READY } from './errors';
export {
  CONTROL_ERROR_CODES,
  CONTROL_METHODS,
  CONTROL_PROTOCOL_VERSION,
  flowgateVersion,
  type ControlMethod,
  type ControlRequest,
  type ControlResponse,
  type ControlRecords,
  type ControlResults,
  type FlowsResult,
  type PingResult,
  type VersionResult,
} from './protocol';
