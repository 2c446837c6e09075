// ESLint for the web UI in ui/ (`make lint`): browser ES modules, no framework, no bundler.
import js from '@eslint/js';
import globals from 'globals';

export default [
  js.configs.recommended,
  {
    files: ['ui/**/*.js'],
    languageOptions: {ecmaVersion: 2022, sourceType: 'module', globals: {...globals.browser}},
    rules: {
      'no-unused-vars': ['error', {args: 'none', caughtErrors: 'none'}],
      'no-implicit-globals': 'error',
      'no-shadow': 'off',
      eqeqeq: ['error', 'always'],
      'prefer-const': ['error', {destructuring: 'all'}],
      'no-var': 'error',
    },
  },
  {
    languageOptions: {globals: {...globals.node}},
  },
  {
    files: ['eslint.config.js'],
    languageOptions: {sourceType: 'module', globals: {...globals.node}},
  },
];
