import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { STAGE_SETTINGS } from './config.ts';
import { configurationMarkdown, declaredIn, STAGE_SETTING_FILES } from './config-docs.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

describe('docs/configuration.md', () => {
  it('is what `npm run docs:config` generates from the flag table and the schemas', () => {
    const committed = readFileSync(path.join(ROOT, 'docs/configuration.md'), 'utf8');
    expect(committed, 'docs/configuration.md is stale: run `npm run docs:config`').toBe(configurationMarkdown());
  });

  it('names, for every stage schema, the file that declares it', () => {
    expect(STAGE_SETTING_FILES).toHaveLength(STAGE_SETTINGS.length);
    STAGE_SETTINGS.forEach((schema, i) => {
      const file = STAGE_SETTING_FILES[i] ?? '';
      expect(existsSync(path.join(ROOT, file)), file).toBe(true);
      const source = readFileSync(path.join(ROOT, file), 'utf8');
      for (const key of Object.keys(schema.shape)) {
        expect(source, `${key} in ${file}`).toMatch(new RegExp(`^\\s+${key}: `, 'm'));
        expect(declaredIn(key)).toBe(file);
      }
    });
  });
});
