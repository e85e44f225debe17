// ESLint flat config: typescript-eslint's type-aware recommended rules over src/ and test/.
// `npm run lint` runs it; scripts/test runs it after the build and counts a failure.
// Type-aware because the rules that guard against unhandled rejections in the daemon and
// the helper (no-floating-promises, no-misused-promises, await-thenable) need types.
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

/** The project's rule: no lint rule is switched off in code without a reason (`// eslint-disable-next-line rule -- why`). */
const disableNeedsReason = {
  meta: { type: 'problem', messages: { missing: 'give the reason after " -- " in this eslint-disable comment' }, schema: [] },
  create(context) {
    return {
      Program() {
        for (const c of context.sourceCode.getAllComments()) {
          const m = /^\s*eslint-disable(?:-next-line|-line)?\b(.*)$/s.exec(c.value);
          if (!m) continue;
          const why = m[1].split(/\s--\s/)[1];
          if (why === undefined || why.trim() === '') context.report({ loc: c.loc, messageId: 'missing' });
        }
      },
    };
  },
};

export default defineConfig(
  { ignores: ['dist/**', 'node_modules/**'] },
  {
    files: ['src/**/*.ts', 'test/**/*.ts'],
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      // tsconfig.eslint.json = tsconfig.json plus the *.test.ts files the build leaves out.
      parserOptions: { project: './tsconfig.eslint.json', tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    plugins: { banger: { rules: { 'disable-needs-reason': disableNeedsReason } } },
    rules: {
      'banger/disable-needs-reason': 'error',
      // No `any` without a reason; the accepted form is an eslint-disable comment that gives it.
      '@typescript-eslint/no-explicit-any': 'error',
      // A leading underscore marks a binding that is unused on purpose (`[_h, _v, ...rest]`).
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrorsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
          ignoreRestSiblings: true,
        },
      ],
      // Off: tsconfig has no noUncheckedIndexedAccess, yet the code writes `xs[i]!` / `m[1]!` on
      // purpose (~170 places) to mark where it relies on an element being there; this rule would strip them.
      '@typescript-eslint/no-unnecessary-type-assertion': 'off',
      // Off: handler tables (RPC methods, helper ops) and test fakes implement Promise-returning
      // signatures with `async` on purpose, so a throw becomes a rejection (~40 places without an await).
      '@typescript-eslint/require-await': 'off',
    },
  },
  {
    // Tests poke at JSON.parse results and use vitest's asymmetric matchers (expect.any,
    // expect.stringMatching), which are typed `any`; the no-unsafe-* rules guard the product code.
    // no-explicit-any stays on here too.
    files: ['**/*.test.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
    },
  },
);
