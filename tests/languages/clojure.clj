(let [name (read-line)]
  (println (str "hello " name))
  (binding [*out* *err*] (println "err"))
  (System/exit 3))
