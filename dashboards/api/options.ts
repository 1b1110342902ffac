/**
 * The HTTP API's options, with their defaults and bounds: the reference for what can be set.
 *
 * `ApiSettingsSchema`: the API's part of the platform configuration, by the names
 * `cli/config.ts` uses; `apiOptionsOf` turns them into `startApi`'s listening options
 * (whether operators need tokens is wired by the caller, who opens the token store).
 */
import { z } from 'zod';

/** The API's settings in the platform configuration (`cli/config.ts` composes them with the other stages'). */
export const ApiSettingsSchema = z.object({
  /** The interface the HTTP API (and MQTT over WebSocket at /mqtt) listens on. */
  httpHost: z.string().min(1).default('127.0.0.1'),
  /** The HTTP API's port; 0 picks a free one. */
  httpPort: z.number().int().min(0).max(65_535).default(8080),
  /**
   * The HTTP API requires an operator token (bearer) on every route but /healthz, /fn/ and
   * /api/ingest/. `false` (`--no-api-auth`) opens it to anyone who can reach it: local
   * experiments only.
   */
  apiAuth: z.boolean().default(true),
});

export type ApiSettings = Readonly<z.output<typeof ApiSettingsSchema>>;

/** Where `startApi` listens, from the settings. */
export function apiOptionsOf(s: ApiSettings) {
  return { host: s.httpHost, port: s.httpPort };
}
