/**
 * The web console's build (`npm run build:console` → dashboards/web/dist, served by the API at `/`)
 * and dev server (`npx vite --config dashboards/web/vite.config.ts`), which proxies `/api` to a
 * running platform: VOLTLINE_API is its port or URL (default port 8080).
 */
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const api = process.env['VOLTLINE_API'] ?? '8080';
const target = /^\d+$/.test(api) ? `http://127.0.0.1:${api}` : api;

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022' },
  server: { proxy: { '/api': { target, changeOrigin: true } } },
});
