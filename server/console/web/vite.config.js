// Builds the console into ../static (committed, shipped as package data): the server
// serves index.html at / and the hashed assets under /console/assets/.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/console/",
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: "../static",
    emptyOutDir: true,
    assetsDir: "assets",
    target: "es2020",
    chunkSizeWarningLimit: 1000,
  },
});
