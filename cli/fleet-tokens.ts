/**
 * Tokens for a simulated fleet run by the platform itself (`--demo`, `POST /api/sim`): its
 * station ids are registered devices like any user's, imported when new and given new
 * tokens when registered already (a token is shown only once, so an earlier one is gone).
 * The tokens are kept in memory only.
 */
import type { DeviceRegistry } from '../ingest/index.ts';

export async function fleetTokens(devices: DeviceRegistry, ids: readonly string[]): Promise<Record<string, string>> {
  const tokens: Record<string, string> = {};
  const fresh = ids.filter((id) => devices.get(id) === undefined);
  if (fresh.length > 0) for (const issued of await devices.import(fresh.map((id) => ({ id })))) tokens[issued.device.id] = issued.token;
  for (const id of ids) if (tokens[id] === undefined) tokens[id] = (await devices.rotate(id)).token;
  return tokens;
}
