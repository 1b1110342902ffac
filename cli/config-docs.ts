/**
 * docs/configuration.md, generated from what the platform itself reads: `voltline up`'s
 * flag table (`commands/up-flags.ts`), the configuration's schema and its defaults
 * (`config.ts`, composed from each stage's `options.ts`). `npm run docs:config` writes it;
 * `config-docs.test.ts` fails when it is stale, so the page cannot drift from the code.
 */
import type { z } from 'zod';
import { markdownCell as cell, writeDocsPage } from '../lib/markdown.ts';
import { STAGE_SETTINGS } from './config.ts';
import { helpText, SETTING_DEFAULTS, UP_FLAGS, type CommandFlag, type FileOnlySetting, type SettingFlag } from './commands/up-flags.ts';

/** Where each schema of `STAGE_SETTINGS` is declared, in the same order: its doc comments are the reference. */
export const STAGE_SETTING_FILES = [
  'cli/config.ts',
  'ingest/broker/options.ts',
  'dashboards/api/options.ts',
  'functions-runtime/scheduler/options.ts',
  'functions-runtime/registry/options.ts',
  'functions-runtime/router/options.ts',
  'ingest/store/options.ts',
  'ingest/data-folder/options.ts',
  'ingest/trigger/cluster-settings.ts',
] as const;

/** The file that declares `setting`. */
export function declaredIn(setting: string): string {
  // The fixed-fleet shorthand (workersMin = workersMax) is resolveConfig's own.
  if (setting === 'workers') return 'cli/config.ts';
  const index = STAGE_SETTINGS.findIndex((schema) => setting in (schema as z.ZodObject).shape);
  const file = STAGE_SETTING_FILES[index];
  if (file === undefined) throw new Error(`no stage declares the setting '${setting}'`);
  return file;
}

function defaultText(setting: string): string {
  const value = SETTING_DEFAULTS[setting];
  if (value === undefined) return '(none)';
  return `\`${typeof value === 'string' ? value : JSON.stringify(value)}\``;
}

export function configurationMarkdown(): string {
  const commandRows = UP_FLAGS.filter((row): row is CommandFlag => 'command' in row);
  const settingRows = UP_FLAGS.filter((row): row is SettingFlag => 'flag' in row && 'setting' in row);
  const fileOnly = UP_FLAGS.filter((row): row is FileOnlySetting => 'fileOnly' in row);
  const flag = (row: SettingFlag | CommandFlag): string => `\`--${row.flag}${row.value === undefined ? '' : ` ${row.value}`}\``;
  const lines = [
    '# Configuration',
    '',
    "<!-- Generated from cli/commands/up-flags.ts and the stages' options.ts by `npm run docs:config`; do not edit by hand. -->",
    '',
    '`voltline up` takes its settings from flags, or from a JSON file (`--config FILE`, the',
    'settings by the names below; flags given as well win). Units are in the names (`Ms`,',
    '`Mb`, `Bytes`, `PerSecond`); a flag of a duration takes `500ms`, `30s`, `5m`. A value out',
    'of bounds stops the start with one sentence naming the setting. What each setting means',
    'in full is the doc comment where it is declared (the last column).',
    '',
    '```json',
    '{ "mqttPort": 1883, "workersMax": 2, "devicePublishRatePerSecond": 50, "maxBatchEvents": 1000 }',
    '```',
    '',
    '## Flags of `voltline up` itself',
    '',
    '| flag | what |',
    '| --- | --- |',
    ...commandRows.map((row) => `| ${flag(row)}${row.short === undefined ? '' : ` (\`-${row.short}\`)`} | ${cell(helpText(row))} |`),
    '',
    '## Settings with a flag',
    '',
    '| flag | setting | default | what | declared in |',
    '| --- | --- | --- | --- | --- |',
    ...settingRows.map(
      (row) => `| ${flag(row)} | \`${row.setting}\` | ${defaultText(row.setting)} | ${cell(helpText(row))} | \`${declaredIn(row.setting)}\` |`,
    ),
    '',
    '## Settings only a `--config` file sets',
    '',
    '| setting | default | declared in |',
    '| --- | --- | --- |',
    ...fileOnly.map((row) => `| \`${row.setting}\` | ${defaultText(row.setting)} | \`${declaredIn(row.setting)}\` |`),
    '',
  ];
  return lines.join('\n');
}

if (import.meta.main) await writeDocsPage('configuration.md', configurationMarkdown());
