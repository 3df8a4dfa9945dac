import { defineConfig } from "vite";

// The gateway serves the build at /dashboard/ and answers /api/v1 on the same origin;
// `npm run dev` proxies /api to the gateway `almere up` starts.
const gateway = "http://127.0.0.1:8080";

export default defineConfig({
  base: "/dashboard/",
  build: {
    outDir: "../services/gateway/dashboard",
    emptyOutDir: true,
    target: "es2022",
    // MapLibre alone is about 1 MB minified: it gets a chunk of its own, which stays cached
    // across dashboard releases; the warning limit is raised to that size, not beyond.
    chunkSizeWarningLimit: 1200,
    rolldownOptions: {
      output: {
        codeSplitting: { groups: [{ name: "maplibre", test: /node_modules[\\/]maplibre-gl/ }] },
      },
    },
  },
  server: { proxy: { "/api": { target: gateway, changeOrigin: true } } },
});
