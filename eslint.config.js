// Lint rules: typescript-eslint's recommended set, plus the house rules: no console (the CLI
// writes through its io streams, the platform through pino), no unexplained `any`, and no
// floating promises (a promise nobody awaits or catches loses its error; `void p` says the
// loss is meant). Formatting is Prettier's (`npm run format`), not the linter's.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/**', 'data/**', '.tmp/**', 'dashboards/web/dist/**', 'eslint.config.js'] },
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      'no-console': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-floating-promises': 'error',
    },
  },
  {
    // The web console is browser code with its own tsconfig (DOM types, no Node); same rules.
    files: ['dashboards/web/**/*.ts'],
    languageOptions: { parserOptions: { projectService: false, project: './dashboards/web/tsconfig.json', tsconfigRootDir: import.meta.dirname } },
  },
  {
    // Benchmarks are programs whose output is their purpose.
    files: ['bench/**/*.ts'],
    rules: { 'no-console': 'off' },
  },
);
