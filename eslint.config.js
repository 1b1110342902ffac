// Lint rules: typescript-eslint's recommended set, plus the house rules from STYLE.md:
// no console outside the CLI, no unexplained `any`, no floating promises in the hot path.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/**', 'data/**', '.tmp/**'] },
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      'no-console': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
    },
  },
  {
    // Benchmarks are programs whose output is their purpose.
    files: ['bench/**/*.ts'],
    rules: { 'no-console': 'off' },
  },
);
