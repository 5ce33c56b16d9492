/**
 * flowgate's public API, what `import { Dataplane, loadConfig } from 'flowgate'` gives (the
 * package's `exports` map points here and nowhere else).
 *
 * Importing it loads no native code: the addon, and DPDK with it, load when the first
 * Dataplane is constructed (lib/native.ts), so that config tooling (loadConfig, check)
 * runs where the addon is not built or there are no hugepages.
 */
export {
  Dataplane,
  exceptionReasons,
  type CaptureDirection,
  type CaptureOptions,
  type CaptureStats,
  type DataplaneStats,
  type Flow,
  type FlowCounter,
  type FlowDirection,
  type FlowNat,
  type FlowOutput,
  type FlowPairOptions,
  type IdleMode,
  type PortInfo,
  type PortOptions,
  type ReapedFlow,
  type StartOptions,
  type TraceOptions,
  type TracePage,
  type TraceRecord,
  type TunnelMode,
  type TunnelMtu,
  type TunnelOptions,
  type VlanInfo,
  type VlanOptions,
  type VlanProtocol,
} from './dataplane';
export type { Observation, ObservationKind } from './slowpath/observations';
export { DataplaneError, FlowgateError, InvalidArgumentError, StateError } from './errors';
export {
  checkConfigText,
  compileConfig,
  ConfigError,
  configSchema,
  formatIssue,
  loadConfig,
  type CheckOptions,
  type CheckResult,
  type CompiledConfig,
  type Config,
  type ConfigInput,
  type ConfigIssue,
  type PortConfig,
  type RouteConfig,
  type TunnelConfig,
} from './config';
