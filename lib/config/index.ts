export { checkConfigText, loadConfig, formatIssue, ConfigError, type ConfigIssue, type CheckOptions, type CheckResult } from './load';
export { compileConfig, type CompiledConfig, type PortModel, type TunnelModel, type RouteModel, type AddressModel, type PrefixModel, type MacModel, type PuntPolicerModel } from './compile';
export { configSchema, type Config, type ConfigInput, type PortConfig, type TunnelConfig, type RouteConfig, type TunnelMode } from './schema';
export { detectMachine, parseCpuList, type Machine } from '../machine';
export { renderConfigReference, configReferenceRows, type ReferenceRow } from './reference';
